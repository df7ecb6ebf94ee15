"""The report's concept section on hand-made runs: the top concept per run and city with its causal rank,
the agreement of matched concepts (a permuted copy agrees fully, unrelated strengths less), the section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citylens.core.run_folder import variant_dirs
from citylens.pipeline.runs import scan_sweep
from citylens.report.concepts import (
    concept_agreement,
    concept_faithfulness,
    concept_section,
    concept_summary,
)

IMAGE_IDS = ["pittsburgh/p0", "tokyo/p1"]


def write_concepts(run_dir: Path, maps: np.ndarray, ids: list[str], rows: list[tuple]) -> None:
    """concepts.csv from (city, concept, importance, object, causal_rank) rows, and the concept store."""
    table = pd.DataFrame(rows, columns=["city", "concept", "importance", "object", "causal_rank"])
    table.to_csv(run_dir / "concepts.csv", index=False)
    (run_dir / "causal.csv").write_text("city,object,effect,method\n")  # the run has a causal table
    (run_dir / "concepts").mkdir()
    np.save(run_dir / "concepts" / "maps.npy", maps.astype(np.float32))
    (run_dir / "concepts" / "meta.json").write_text(json.dumps({"image_ids": ids}))


@pytest.fixture
def runs(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    rng = np.random.default_rng(0)
    strength = rng.random((40, 3))
    ids = [f"img{i}" for i in range(40)]
    maps = np.repeat(np.repeat(strength[:, :, None, None], 2, 2), 2, 3)  # (40, 3, 2, 2), mean = strength
    names = ["0_simple-s0", "1_simple-s1", "2_vgg11-s0"]
    for name, arch, seed in zip(names, ["simple", "simple", "vgg11"], [0, 1, 0]):
        make_run(sweep / name, arch, seed, hand_masks["A"])
    rows = [
        ("tokyo", 0, 0.5, "signboard", 1.0),
        ("tokyo", 1, 0.1, "tree", 7.0),
        ("pittsburgh", 2, 0.3, None, None),
    ]
    write_concepts(sweep / names[0], maps, ids, rows)
    rows = [("tokyo", 2, 0.4, "road", 9.0), ("tokyo", 0, 0.2, "fence", 2.0)]
    write_concepts(sweep / names[1], maps[:, [2, 0, 1]], ids, rows)  # the same concepts, renumbered
    write_concepts(sweep / names[2], rng.random((40, 3, 2, 2)), ids, rows)
    found, _ = scan_sweep(sweep)
    return found


def test_summary_takes_each_citys_most_important_concept(runs):
    summary = concept_summary(runs)
    first = summary[summary["run"] == "0_simple-s0"].set_index("city")
    assert first.loc["tokyo", ["concept", "object"]].tolist() == [0, "signboard"]
    assert first.loc["tokyo", "causal_rank"] == 1.0 and first.loc["tokyo", "second_rank"] == 7.0
    assert first.loc["pittsburgh", "object"] == "no object" and np.isnan(
        first.loc["pittsburgh", "causal_rank"]
    )
    second = summary[summary["run"] == "1_simple-s1"].iloc[0]
    assert (second["object"], second["causal_rank"], second["second_rank"]) == ("road", 9.0, 2.0)


def test_renumbered_concepts_agree_fully_and_unrelated_ones_less(runs):
    table = concept_agreement(runs).set_index(["run_a", "run_b"])
    seed_pair = table.loc[("0_simple-s0", "1_simple-s1")]
    assert seed_pair["group"] == "seed" and seed_pair["agreement"] == pytest.approx(1.0)
    assert seed_pair["distance"] == pytest.approx(0.0, abs=1e-9) and seed_pair["n_images"] == 40
    other = table.loc[("0_simple-s0", "2_vgg11-s0")]
    assert other["group"] == "architecture" and other["agreement"] < 0.5


def test_section_counts_the_cases_on_the_causal_top_two(runs):
    summary = concept_summary(runs)
    section = concept_section(runs, summary, concept_agreement(runs))
    # run 0: tokyo (top rank 1), pittsburgh (no object: a miss); runs 1, 2: tokyo (top 9, second 2)
    assert (
        "top 2 in 1 of 4 run-city cases with a causal table, one of its two most important in 3"
        in section.reading
    )
    assert "seed pairs 1.00" in section.reading and "| signboard |" in section.body
    # Ranks print as whole numbers, a missing rank as a dash (run 0's tokyo: ranks 1 and 7).
    assert "| 1 | 7 |" in section.body and "| 1.000 |" not in section.body


def test_top_concept_and_top_object_removal_side_by_side(runs):
    run = runs[0]
    table = pd.read_csv(run.path / "concepts.csv")
    table.assign(importance_p=[0.25, 0.02, 0.1]).to_csv(run.path / "concepts.csv", index=False)
    pd.DataFrame(
        {
            "city": ["tokyo", "tokyo", "tokyo", "pittsburgh"],
            "object": ["signboard", "tree", "tree", "skyscraper"],
            "effect": [0.15, 0.05, 0.9, 0.3],
            "method": ["counterfactual", "counterfactual", "deletion", "counterfactual"],
        }
    ).to_csv(run.path / "causal.csv", index=False)
    summary = concept_summary(runs)
    first = summary[summary["run"] == run.name].set_index("city")
    # the counterfactual top object, not deletion's tree (0.9)
    assert first.loc["tokyo", ["top_object", "effect_method"]].tolist() == ["signboard", "counterfactual"]
    assert first.loc["tokyo", ["drop_p", "object_effect"]].tolist() == pytest.approx([0.25, 0.15])
    assert first.loc["pittsburgh", ["drop_p", "object_effect"]].tolist() == pytest.approx([0.1, 0.3])
    assert first.loc["pittsburgh", "top_object"] == "skyscraper"
    other = summary[summary["run"] != run.name]
    assert other["drop_p"].isna().all() and (other["top_object"] == "").all()  # no importance_p, no effects
    section = concept_section(runs, summary, concept_agreement(runs))
    assert "lowers P(true city) by 0.175 on average" in section.reading
    assert "from the image by 0.225; the concept more in 1 of 2 run-city cases" in section.reading
    assert "| 0.250 | signboard | 0.150 |" in section.body


def test_section_reads_the_concept_rows_of_faithfulness_once_per_run_and_city(runs):
    rows = {
        "city": ["tokyo", "pittsburgh", "tokyo", "tokyo"],
        "method": ["counterfactual", "counterfactual", "deletion", "counterfactual"],
        "statistic": ["concept", "concept", "concept", "ratio"],
        "spearman": [0.8, 0.4, -1.0, -1.0],
        "p_at_k": [1.0, 0.5, 0.0, 0.0],
    }
    for run in runs[:2]:
        (first,) = variant_dirs(run.path)
        shutil.copytree(first / "masks", first.parent / "other" / "masks")
        for folder in variant_dirs(run.path):  # the same concept rows in every variant's file, counted once
            pd.DataFrame(rows).to_csv(folder / "faithfulness.csv", index=False)
        assert len(variant_dirs(run.path)) == 2
    scored = concept_faithfulness(runs)
    assert len(scored) == 4 and set(scored["method"]) == {"counterfactual"}
    section = concept_section(runs, concept_summary(runs), concept_agreement(runs))
    assert "counterfactual effects with mean Spearman rho 0.60 and mean P@k 0.75 over 4 run-city" in (
        section.reading
    )
