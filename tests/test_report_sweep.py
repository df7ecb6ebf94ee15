"""The sweep report (build_report) on hand-made runs: Table 2 grouping and readings, data groups, variants,
what is missing, runs refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from citylens.pipeline import Variant
from citylens.report.sweep import Options, build_report

FAST = Options(n_boot=200, n_perm=1000, examples_per_city=1)


def test_table2_grouping_and_readings_on_hand_made_runs(
    hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simpler-s0", "simpler", 0, hand_masks["B"])
    make_run(sweep / "2_simple-s1", "simple", 1, hand_masks["C"])
    make_run(sweep / "3_simpler-s1", "simpler", 1, hand_masks["B"], finished=False)
    out = build_report(sweep, FAST)
    pairs = pd.read_csv(out / "table2.csv")
    assert list(zip(pairs["label_a"], pairs["label_b"])) == [
        ("simple-s0", "simple-s1"),
        ("simple-s0", "simpler-s0"),
        ("simple-s1", "simpler-s0"),
    ]
    assert pairs["group"].tolist() == ["seed", "architecture", "architecture"]
    expected = [hand_ar[("A", "C")], hand_ar[("B", "A")], hand_ar[("B", "C")]]
    assert pairs["ar"].tolist() == pytest.approx(expected, rel=1e-5)
    assert ((pairs["ci_low"] <= pairs["ar"] + 1e-9) & (pairs["ar"] <= pairs["ci_high"] + 1e-9)).all()
    grouped = pd.read_csv(out / "table2_grouped.csv")
    assert grouped["pair"].tolist() == ["simple vs simpler", "simple vs simple retrained"]
    assert grouped["n_pairs"].tolist() == [2, 1]
    assert grouped["ar"].tolist() == pytest.approx([0.75, 0.5], rel=1e-5)
    assert grouped["paper_ar"].tolist() == [0.3149, 0.2411]
    text = (out / "report.md").read_text()
    assert "3_simpler-s1`: unfinished: no complete.json" in text
    assert "mean AR 0.750 vs 0.500" in text and "Most alike: simple-s0 vs simple-s1 (AR 0.500)" in text
    assert "masks are drawn alone" in text and "No run has a t-SNE map" in text
    assert text.count("**Reading:**") == 9
    assert "0 of 6 test images (summed over runs) are misclassified" in text
    assert "95% interval over test places, for these trained networks" in text
    for name in ("table2_heatmap.png", "fig6_examples_runs.png", "runs.csv", "statistics.csv"):
        assert (out / name).is_file()
    tests = pd.read_csv(out / "statistics.csv")
    assert {"test", "n_relabellings", "p_value", "p_adjusted", "primary"} <= set(tests.columns)
    # 3 runs, simple x 2 + simpler: 3 distinct relabellings; the observed one is the most extreme
    ar = tests.iloc[0]
    assert ar["primary"] and ar["n_relabellings"] == 3 and ar["p_value"] == pytest.approx(1 / 3)
    assert ar["test"] == "runs relabelled, every relabelling" and not tests["primary"].iloc[1:].any()


def test_sweep_over_a_data_setting_compares_within_data_groups(
    hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    """data.seed=0,1: the same image ids, other pictures; runs are compared only within each data's group."""
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"], fingerprint="data-0")
    make_run(sweep / "1_simple-s0", "simple", 0, hand_masks["B"], fingerprint="data-1")
    make_run(sweep / "2_simple-s1", "simple", 1, hand_masks["C"], fingerprint="data-0")
    make_run(sweep / "3_simple-s1", "simple", 1, hand_masks["A"], fingerprint="data-1")
    out = build_report(sweep, FAST)
    pairs = pd.read_csv(out / "table2.csv")
    assert sorted(zip(pairs["data_group"], pairs["run_a"], pairs["run_b"])) == [
        (1, "0_simple-s0", "2_simple-s1"),
        (2, "1_simple-s0", "3_simple-s1"),
    ]
    assert pairs["ar"].tolist() == pytest.approx([hand_ar[("A", "C")], hand_ar[("B", "A")]], rel=1e-5)
    text = (out / "report.md").read_text()
    assert "form 2 data groups" in text
    assert "data group 2 (dataset_fingerprint 'data-0' vs 'data-1' against group 1)" in text
    assert "## Table 2: average residual between runs (data group 2)" in text
    assert (out / "table2_heatmap_g1.png").is_file() and (out / "fig6_examples_runs_g2.png").is_file()
    assert pd.read_csv(out / "runs.csv")["data_group"].tolist() == [1, 1, 2, 2]


def test_two_variants_of_every_run_are_listed_side_by_side(
    default_variant, hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    other = Variant(threshold=0.3, target="prediction")
    for name, arch, seed, masks in (("0_simple-s0", "simple", 0, "A"), ("1_simple-s1", "simple", 1, "C")):
        make_run(sweep / name, arch, seed, hand_masks[masks])
        make_run(sweep / name, arch, seed, hand_masks["B" if seed else "A"], variant=other)
    out = build_report(sweep, FAST)
    table = pd.read_csv(out / "variants.csv").set_index("variant")
    assert sorted(table.index) == sorted([default_variant.name, other.name])
    assert table.loc[default_variant.name, "ar_seeds"] == pytest.approx(hand_ar[("A", "C")], rel=1e-5)
    assert table.loc[other.name, "ar_seeds"] == pytest.approx(hand_ar[("B", "A")], rel=1e-5)
    assert table.loc[other.name, "target"] == "prediction" and table.loc[other.name, "threshold"] == 0.3
    text = (out / "report.md").read_text()
    assert "2 analysis variants" in text
    assert "## One image, every explainer" in text and "fig_explainers.png" in text
    with Image.open(out / "fig_explainers.png") as grid:
        assert grid.width > 300 and grid.height > 200


def test_one_run_and_no_seed_pairs_say_what_is_missing(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    text = (build_report(sweep, FAST) / "report.md").read_text()
    assert "Table 2 needs two finished runs of the same data; this sweep has 1" in text
    make_run(sweep / "1_vgg11-s0", "vgg11", 0, hand_masks["B"])
    out = build_report(sweep, FAST)
    text = (out / "report.md").read_text()
    assert "needs two seeds of one architecture" in text
    assert pd.read_csv(out / "statistics.csv")["p_value"].isna().all()


def test_symlinked_run_leaving_the_sweep_is_refused(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    outside = make_run(tmp_path / "elsewhere" / "1_simpler-s0", "simpler", 0, hand_masks["B"])
    (sweep / "1_simpler-s0").symlink_to(outside, target_is_directory=True)
    out = build_report(sweep, FAST)
    runs = pd.read_csv(out / "runs.csv").set_index("run")
    assert runs["status"].to_dict() == {"0_simple-s0": "finished", "1_simpler-s0": "refused"}
    assert "symlink leaving the sweep" in runs.loc["1_simpler-s0", "reason"]


def test_figure_5_gives_the_spread_of_r_across_seeds(
    default_variant, hand_masks, make_run, make_sweep, ratio_rows, tmp_path: Path
):
    """ratio_spread.csv: mean, SD across seeds and range of R per architecture, city and kept object; the
    report's table shows the planted and the top objects as 'mean ± SD (runs)'."""
    sweep = make_sweep(tmp_path)
    ratios = {  # run -> (tokyo signboard, tokyo road, pittsburgh earth)
        ("0_simple-s0", "simple", 0): (0.8, 0.2, 0.5),
        ("1_simple-s1", "simple", 1): (0.6, 0.3, 0.5),
        ("2_vgg11-s0", "vgg11", 0): (0.4, 0.1, 0.9),
        ("3_vgg11-s1", "vgg11", 1): (0.4, 0.5, 0.6),
    }
    planted = {"tokyo": ["signboard"], "pittsburgh": ["earth"]}
    for (name, arch, seed), (sign, road, earth) in ratios.items():
        run = make_run(
            sweep / name, arch, seed, hand_masks["A"], dataset={"kind": "synthetic", "planted": planted}
        )
        rows = (
            ratio_rows("tokyo", {"signboard": sign, "road": road})
            + ratio_rows("pittsburgh", {"earth": earth})
            + ratio_rows("pittsburgh", {"sky": 0.99}, kept=False)
            + ratio_rows("tokyo", {"signboard": 0.0}, threshold=0.3)
        )
        pd.DataFrame(rows).to_csv(default_variant.dir(run) / "object_ratios.csv", index=False)
    out = build_report(sweep, FAST)
    spread = pd.read_csv(out / "ratio_spread.csv").set_index(["arch", "city", "object"])
    assert len(spread) == 6  # 2 architectures x 3 kept objects; sky (not kept) and threshold 0.3 left out
    assert spread["n_runs"].tolist() == [2] * 6
    assert spread.loc[("simple", "tokyo", "signboard"), ["mean", "seed_sd"]].tolist() == pytest.approx(
        [0.7, 0.02**0.5]
    )
    assert spread.loc[("vgg11", "tokyo", "signboard"), "seed_sd"] == pytest.approx(0.0)
    assert spread.loc[("vgg11", "pittsburgh", "earth"), ["low", "high"]].tolist() == [0.6, 0.9]
    text = (out / "report.md").read_text()
    # the planted objects are shown, and road only where it is a city's top object (it is not)
    assert "| tokyo | signboard | 0.700 ± 0.141 (2) | 0.400 ± 0.000 (2) |" in text
    assert "| pittsburgh | earth | 0.500 ± 0.000 (2) | 0.750 ± 0.212 (2) |" in text
    assert "| tokyo | road |" not in text
    # seed SDs of the shown rows: 0.141, 0, 0, 0.212 -> median 0.0707; SD of the arch means: signboard
    # (0.7, 0.4) 0.212, earth (0.5, 0.75) 0.177 -> median 0.194
    assert "median SD of 0.071 (largest 0.212: earth in pittsburgh, vgg11)" in text
    assert "the architectures' mean R differ with a median SD of 0.194" in text
