"""The report's headline (which objects make each city recognisable) and the agreement of object importance
between runs, on a fake sweep whose numbers are known by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from citylens.pipeline.runs import scan_sweep
from citylens.report.headline import (
    TITLE,
    choose,
    headline_choice,
    importance_agreement,
    ranked_objects,
)
from citylens.report.sweep import Options, build_report
from citylens.report.tables import IMPORTANCE_COMPARISON

FAST = Options(n_boot=50, n_perm=100, examples_per_city=1, explorer=False)
VARIANT = "gradcam-last_block-label-all-t0.5"
# Object attributions of seed 0; seed 1 adds 0.02 to each. Simple swaps Tokyo's first two objects.
RESNET_TOKYO = {"signboard": 0.5, "fence": 0.4, "car": 0.2, "road": 0.1, "building": 0.0}
SIMPLE_TOKYO = {"fence": 0.5, "signboard": 0.4, "car": 0.2, "road": 0.1, "building": 0.0}
PITT = {"skyscraper": 0.6, "earth": 0.5, "car": 0.1, "road": 0.05}
# R: Tokyo in the order of the effects, Pittsburgh against it (the ratio rows of faithfulness.csv say so).
RATIOS = {"tokyo": {"signboard": 0.9, "car": 0.3}, "pittsburgh": {"road": 0.4, "earth": 0.2}}


def faithfulness_row(city: str, statistic: str, rho: float, p_at_k: float) -> dict:
    return {
        "city": city,
        "threshold": 0.5,
        "method": "counterfactual",
        "statistic": statistic,
        "n_objects": 4,
        "spearman": rho,
        "spearman_p": 0.0,
        "k": 2,
        "p_at_k": p_at_k,
        "causal_top": "",
        "explained_top": "",
        "planted": "",
        "causal_planted_p_at_k": 1.0,
        "explained_planted_p_at_k": p_at_k,
    }


@pytest.fixture
def sweep(tmp_path: Path, make_sweep, make_run, hand_masks, planted) -> Path:
    """Two architectures x two seeds; attribution rho 1 everywhere but Simple's Tokyo (0.9, P@2 0.5)."""
    root = make_sweep(tmp_path)
    for k, (arch, seed) in enumerate([("resnet18", 0), ("resnet18", 1), ("simple", 0), ("simple", 1)]):
        run = make_run(root / f"{k}_{arch}-s{seed}", arch, seed, hand_masks["A"])
        folder = run / "analysis" / VARIANT
        meta = json.loads((folder / "masks" / "meta.json").read_text())
        meta["dataset"] = {"kind": "synthetic", "planted": planted}
        (folder / "masks" / "meta.json").write_text(json.dumps(meta))
        tokyo = RESNET_TOKYO if arch == "resnet18" else SIMPLE_TOKYO
        rows = [
            {"city": city, "object": o, "n_images": 3, "attribution": v + 0.02 * seed}
            for city, values in (("tokyo", tokyo), ("pittsburgh", PITT))
            for o, v in values.items()
        ]
        table = pd.DataFrame(rows)
        table.assign(ci_low=table["attribution"] - 0.1, ci_high=table["attribution"] + 0.1).to_csv(
            folder / "object_attribution.csv", index=False
        )
        ratios = pd.DataFrame(
            {
                "threshold": 0.5,
                "city": c,
                "object": o,
                "ratio": r,
                "kept": True,
                "ci_low": 0.0,
                "ci_high": 1.0,
            }
            for c, values in RATIOS.items()
            for o, r in values.items()
        )
        ratios.to_csv(folder / "object_ratios.csv", index=False)
        # Every object has a causal effect except Tokyo's building (a class the generator cannot remove).
        causal = table[(table["city"] != "tokyo") | (table["object"] != "building")]
        causal.assign(effect=causal["attribution"], method="counterfactual").to_csv(
            run / "causal.csv", index=False
        )
        simple = arch == "simple"
        pd.DataFrame(
            [
                faithfulness_row("tokyo", "ratio", 1.0, 1.0),
                faithfulness_row("pittsburgh", "ratio", -1.0, 0.0),
                faithfulness_row("tokyo", "attribution", 0.9 if simple else 1.0, 0.5 if simple else 1.0),
                faithfulness_row("pittsburgh", "attribution", 1.0, 1.0),
            ]
        ).to_csv(folder / "faithfulness.csv", index=False)
    return root


def test_the_most_faithful_statistic_is_chosen(sweep: Path):
    runs, _ = scan_sweep(sweep, VARIANT)
    choice = headline_choice(runs)
    assert (choice.variant, choice.statistic, choice.method) == (VARIANT, "attribution", "counterfactual")
    # 8 run-city cases: six with rho 1 and P@2 1, Simple's two Tokyo cases with 0.9 and 0.5.
    assert choice.spearman == pytest.approx((6 + 2 * 0.9) / 8)
    assert choice.p_at_k == pytest.approx((6 + 2 * 0.5) / 8)
    assert (choice.n_cases, choice.n_perfect) == (8, 6)
    rows = pd.read_csv(next(sweep.glob(f"*/analysis/{VARIANT}/faithfulness.csv"))).assign(variant=VARIANT)
    assert choose(rows[rows["statistic"] == "ratio"]).spearman == pytest.approx(0.0)
    assert choose(rows.iloc[:0]) is None


def test_objects_are_ranked_by_their_mean_over_seeds(sweep: Path):
    runs, _ = scan_sweep(sweep, VARIANT)
    table = ranked_objects(runs, VARIANT, "attribution", top=2)
    tokyo = table[(table["arch"] == "simple") & (table["city"] == "tokyo")]
    assert tokyo["object"].tolist() == ["fence", "signboard"]
    assert tokyo["value"].tolist() == pytest.approx([0.51, 0.41])
    assert tokyo["seed_sd"].tolist() == pytest.approx([0.02 / 2**0.5] * 2)
    assert tokyo["low"].tolist() == pytest.approx([0.41, 0.31])
    assert set(table["arch"]) == {"resnet18", "simple"} and len(table) == 8


def test_agreement_is_one_minus_the_rank_correlation(sweep: Path):
    runs, _ = scan_sweep(sweep, VARIANT)
    pairs = importance_agreement(runs, VARIANT, "attribution")
    assert len(pairs) == 6
    seeds = pairs[pairs["group"] == "seed"]
    archs = pairs[pairs["group"] == "architecture"]
    assert seeds["distance"].tolist() == pytest.approx([0.0, 0.0])
    # Tokyo: ranks 1..5 against 2,1,3,4,5 -> rho = 1 - 6 * 2 / (5 * 24) = 0.9; Pittsburgh the same order.
    assert archs["rho"].tolist() == pytest.approx([0.95] * 4)
    assert archs["distance"].tolist() == pytest.approx([0.05] * 4)


def test_report_opens_with_the_headline_and_tests_the_agreement(sweep: Path):
    out = build_report(sweep, FAST)
    text = (out / "report.md").read_text()
    sections = text.split("\n## ")
    assert sections[1].startswith(TITLE)
    headline = sections[1]
    assert "object attribution A" in headline and VARIANT in headline
    assert "P@k = 1 in 6 of 8 run-city cases" in headline
    # ResNet18's Tokyo: signboard (planted) 0.51 +- SD 0.014 over its two seeds; the paper's R beside it.
    assert "signboard* 0.51 ± 0.01" in headline
    assert "signboard* 0.90" in headline
    assert "building† 0.01 ± 0.01" in headline and "road 0.11 ± 0.01" in headline
    assert (out / "headline_attribution.png").stat().st_size > 10_000
    tests = pd.read_csv(out / "statistics.csv")
    row = tests[tests["comparison"] == IMPORTANCE_COMPARISON].iloc[0]
    assert row["between_mean"] == pytest.approx(0.05) and row["within_mean"] == pytest.approx(0.0)
    assert (row["n_between"], row["n_within"], row["n_relabellings"]) == (4, 2, 3)
    # The observed split is the only one of the three with every seed pair inside an architecture.
    assert row["p_value"] == pytest.approx(1 / 3)
    assert "Object-importance rankings" in text


def test_without_a_causal_check_the_recommended_explainer_is_read_unscored(sweep: Path):
    """Real data without the deletion check: no faithfulness table, so the headline reads the attribution
    of the explainer measured best on the synthetic cities, and says it is unscored."""
    for run in sorted(p for p in sweep.iterdir() if (p / "complete.json").is_file()):
        cam = run / "analysis" / VARIANT
        occlusion = run / "analysis" / "occlusion-input-label-all-t0.5"
        shutil.copytree(cam / "masks", occlusion / "masks")
        shutil.move(cam / "object_attribution.csv", occlusion / "object_attribution.csv")
        for name in ("faithfulness.csv", "../../causal.csv"):
            (cam / name).unlink()
    runs, _ = scan_sweep(sweep, VARIANT)
    choice = headline_choice(runs)
    assert (choice.variant, choice.statistic, choice.n_cases) == (
        "occlusion-input-label-all-t0.5",
        "attribution",
        0,
    )
    text = (build_report(sweep, FAST) / "report.md").read_text()
    headline = text.split("\n## ")[1]
    assert headline.startswith(TITLE) and "unscored" in headline
    assert "signboard* 0.51 ± 0.01" in headline and "†" not in headline.split("\n\n* =")[0]


def test_the_concepts_ranking_can_be_the_headline(sweep: Path):
    """Concept rows that follow the causal effects best make the headline read the run's concepts.csv."""
    for run in sorted(p for p in sweep.iterdir() if (p / "complete.json").is_file()):
        folder = run / "analysis" / VARIANT
        rows = pd.read_csv(folder / "faithfulness.csv")
        concept = rows[rows["statistic"] == "ratio"].assign(statistic="concept", spearman=1.0, p_at_k=1.0)
        pd.concat([rows, concept]).to_csv(folder / "faithfulness.csv", index=False)
        concepts = pd.DataFrame(
            {
                "city": ["tokyo", "tokyo", "tokyo", "pittsburgh", "pittsburgh"],
                "concept": [0, 1, 2, 0, 1],
                "importance": [0.3, 0.2, 0.7, 0.4, 0.9],
                "object": ["fence", "fence", "signboard", "earth", None],
            }
        )
        concepts.assign(
            importance_low=concepts["importance"] - 0.1, importance_high=concepts["importance"] + 0.1
        ).to_csv(run / "concepts.csv", index=False)
    runs, _ = scan_sweep(sweep, VARIANT)
    choice = headline_choice(runs)
    assert (choice.statistic, choice.spearman, choice.n_perfect) == ("concept", 1.0, 8)
    table = ranked_objects(runs, choice.variant, "concept")
    tokyo = table[(table["arch"] == "simple") & (table["city"] == "tokyo")]
    assert tokyo["object"].tolist() == ["signboard", "fence"]  # fence: its larger concept, 0.3
    assert tokyo["value"].tolist() == pytest.approx([0.7, 0.3])
    assert tokyo["low"].tolist() == pytest.approx([0.6, 0.2])
    out = build_report(sweep, FAST)
    headline = (out / "report.md").read_text().split("\n## ")[1]
    assert "concept importance" in headline and "of the concept step" in headline
    assert "signboard* 0.70 ± 0.00, fence* 0.30 ± 0.00" in headline and "earth* 0.40" in headline
    assert (out / "headline_concept.png").stat().st_size > 10_000
