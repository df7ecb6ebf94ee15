"""The parts of report.md (citylens/report/sections.py), built from hand-made runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from citylens.pipeline import Variant
from citylens.pipeline.runs import data_groups, scan_sweep, stream_residuals
from citylens.report import sections, tables
from citylens.report.sections import Section

DASH = "–"


def _ratios(run_dir: Path, values: dict[str, dict[str, float]], threshold: float = 0.5) -> None:
    rows = [
        {"threshold": threshold, "city": city, "object": o, "ratio": r, "kept": True}
        for city, objects in values.items()
        for o, r in objects.items()
    ]
    pd.DataFrame(rows).to_csv(Variant().dir(run_dir) / "object_ratios.csv", index=False)


@pytest.fixture
def sweep(tmp_path: Path, make_run, make_sweep, hand_masks) -> Path:
    """simple-s0 (masks A), simpler-s0 (B), simple-s1 (C), with Tokyo's signboard and fence planted."""
    sweep = make_sweep(tmp_path)
    dataset = {"kind": "synthetic", "planted": {"tokyo": ["signboard", "fence"]}}
    for name, arch, seed, masks in (
        ("0_simple-s0", "simple", 0, "A"),
        ("1_simpler-s0", "simpler", 0, "B"),
        ("2_simple-s1", "simple", 1, "C"),
    ):
        make_run(sweep / name, arch, seed, hand_masks[masks], dataset=dataset)
    return sweep


@pytest.fixture
def runs(sweep):
    return scan_sweep(sweep)[0]


# ---------------------------------------------------------------- Section and the run list


def test_section_render():
    full = Section("Title", "the reading.", "| a |", "fig.png").render()
    assert full == "## Title\n\n**Reading:** The reading.\n\n| a |\n\n![Title](fig.png)"
    assert Section("T", "").render() == "## T\n\n**Reading:** "
    assert Section("T", "x", figure="f.png").render() == "## T\n\n**Reading:** X\n\n![T](f.png)"


def test_runs_section(runs):
    runs[0].metrics["test/acc"] = 0.5
    runs[2].metrics.pop("test/acc")
    section = sections.runs_section(runs, {"3_vgg11-s0": "unfinished: no complete.json"})
    assert section.title == "Runs"
    assert section.reading == "3 finished runs (2 architectures), test accuracy 0.500 to 1.000; 1 ignored."
    lines = section.body.splitlines()
    assert lines[0] == "| run | label | architecture | seed | test accuracy | test images |"
    assert lines[2] == "| 0_simple-s0 | simple-s0 | simple | 0 | 0.500 | 2 |"
    assert lines[4] == f"| 2_simple-s1 | simple-s1 | simple | 1 | {DASH} | 2 |"
    assert section.body.endswith("Ignored runs:\n\n- `3_vgg11-s0`: unfinished: no complete.json")


def test_runs_section_without_runs():
    assert sections.runs_section([], {}).reading == "No finished run in this sweep yet."
    none = sections.runs_section([], {"a": "failed: boom"})
    assert none.reading == "No finished run in this sweep yet; 1 ignored."
    assert none.body == "\n\nIgnored runs:\n\n- `a`: failed: boom"


def test_group_tag():
    assert sections.group_tag(None) == ("", "")
    assert sections.group_tag(2) == (" (data group 2)", "_g2")


def test_groups_section_names_what_differs(tmp_path, make_run, make_sweep, hand_masks):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_a", "simple", 0, hand_masks["A"], fingerprint="data-0")
    make_run(sweep / "1_b", "simple", 0, hand_masks["B"], fingerprint="data-1")
    make_run(sweep / "2_c", "simple", 1, hand_masks["C"], fingerprint="data-0")
    groups, refused = data_groups(scan_sweep(sweep)[0])
    assert not refused
    section = sections.groups_section(groups)
    assert section.body.splitlines() == [
        "- data group 1: `0_a`, `2_c`",
        "- data group 2 (dataset_fingerprint 'data-0' vs 'data-1' against group 1): `1_b`",
    ]
    assert section.reading.startswith("The runs used 2 different data settings, so they form 2 data groups")


# ---------------------------------------------------------------- Table 2 and the statistics


def test_table2_sections(runs, tmp_path):
    pairs = stream_residuals([r.store for r in runs], [r.name for r in runs])
    per_pair, grouped = tables.table2(runs, pairs, n_boot=100)
    tests = tables.comparison_tests(runs, per_pair, tables.ratio_distances(runs, 0.5), n_perm=100)
    table, heatmap = sections.table2_sections(runs, per_pair, grouped, tests, tmp_path, group=2)
    assert table.title == "Table 2: average residual between runs (data group 2)"
    assert heatmap.title == "Table 2 as a heatmap (data group 2)"
    lines = table.body.splitlines()
    assert lines[0] == "| pair | pairs of runs | AR [95% interval] | SD across seeds | paper |"
    assert lines[2].startswith("| simple vs simpler | 2 | 0.7500 [")
    assert lines[2].endswith(" | 0.0442 | 0.3149 |")
    assert lines[3].startswith("| simple vs simple retrained | 1 | 0.5000 [0.0000, 1.0000] | – | 0.2411 |")
    assert "<details><summary>Every pair of runs (table2.csv)</summary>" in table.body
    assert "| seed | simple-s0 | simple-s1 | 0.5000 [0.0000, 1.0000] |" in table.body
    assert table.reading.startswith("masks differ somewhat more between architectures than between seeds")
    assert "Against the paper's Table 2 for the same groups: architecture pairs 0.750" in table.reading
    assert heatmap.reading == (
        "Most alike: simple-s0 vs simple-s1 (AR 0.500); most different: simpler-s0 vs simple-s1 (AR 0.781)."
    )
    assert heatmap.figure == "table2_heatmap_g2.png" and (tmp_path / heatmap.figure).is_file()


def test_table2_sections_with_one_run(runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    per_pair, grouped = tables.table2(runs[:1], None)
    (only,) = sections.table2_sections(runs[:1], per_pair, grouped, pd.DataFrame(), out)
    assert only.reading == "Table 2 needs two finished runs of the same data; this sweep has 1."
    (grouped_only,) = sections.table2_sections(runs[:1], per_pair, grouped, pd.DataFrame(), out, 1)
    assert grouped_only.reading.endswith("this group has 1.")
    assert list(out.iterdir()) == []  # no figure


def _tests(p_values: list[float]) -> pd.DataFrame:
    names = ["average residual AR", "L1", "JS", tables.IMPORTANCE_COMPARISON][: len(p_values)]
    return pd.DataFrame(
        {
            "comparison": names,
            "test": "runs relabelled, every relabelling",
            "between_mean": 0.4,
            "within_mean": 0.2,
            "n_between": 4,
            "n_within": 2,
            "n_relabellings": 105,
            "p_value": p_values,
            "p_adjusted": p_values,
            "primary": [True] + [False] * (len(p_values) - 1),
        }
    )


def test_stats_section(tmp_path):
    section = sections.stats_section(_tests([0.0005, 0.2, float("nan")]), 8, group=1)
    assert section.title == "Statistics: do architectures differ more than seeds? (data group 1)"
    lines = section.body.splitlines()
    assert lines[2].endswith("| primary | 0.400 | 0.200 | 4 | 2 | 105 | p < 0.001 | p < 0.001 |")
    assert lines[3].endswith("| secondary | 0.400 | 0.200 | 4 | 2 | 105 | p = 0.2 | p = 0.2 |")
    assert lines[4].endswith(f"| 105 | {DASH} | {DASH} |")
    # The reading is that of the L1 test (row 1); the importance test has no row here.
    assert section.reading.startswith("object-ratio profiles differ somewhat more between architectures")
    assert "1 - rho" not in section.reading
    four = sections.stats_section(_tests([0.5, 0.5, 0.5, 0.01]), 8)
    assert four.title == "Statistics: do architectures differ more than seeds?"
    assert (
        "Object-importance rankings differ more between architectures than between seeds: mean 1 - rho"
        in (four.reading)
    )


# ---------------------------------------------------------------- Figures 3, 5 and 6


def test_fig3_section(runs, tmp_path):
    empty = sections.fig3_section(runs, tmp_path)
    assert empty.reading == "No run has a t-SNE map (tsne.csv)." and empty.figure is None
    tsne = pd.DataFrame(
        {"x": [0.0, 0.1, 0.2, 10.0, 10.1, 10.2], "y": 0.0, "city": ["tokyo"] * 3 + ["pittsburgh"] * 3}
    )
    tsne.to_csv(runs[0].dir / "tsne.csv", index=False)
    fresh = scan_sweep(runs[0].path.parent)[0]
    section = sections.fig3_section(fresh, tmp_path)
    # Three points per city: two of the five nearest neighbours share the city, no majority.
    assert section.reading.startswith(
        "Cities separate in the mask maps with a 5-nearest-neighbour city purity from 0.00 (simple-s0)"
    )
    assert section.figure == "fig3_tsne_runs.png" and (tmp_path / section.figure).is_file()


def test_fig5_section_and_its_spread_table(runs, tmp_path):
    title = "Figure 5: object ratios of every run (threshold 0.5)"
    no_ratios = sections.fig5_section(runs, 0.5, tmp_path, tables.ratio_spread([runs], 0.5))
    assert no_ratios.title == title and no_ratios.reading.startswith("No run has object ratios")
    _ratios(runs[0].path, {"tokyo": {"signboard": 0.9, "car": 0.3}, "pittsburgh": {"earth": 0.6}})
    _ratios(runs[1].path, {"tokyo": {"signboard": 0.4, "car": 0.5}})
    _ratios(runs[2].path, {"tokyo": {"signboard": 0.7, "car": 0.3}})
    fresh = scan_sweep(runs[0].path.parent)[0]
    spread = tables.ratio_spread([fresh], 0.5)
    section = sections.fig5_section(fresh, 0.5, tmp_path, spread)
    assert section.reading.startswith(
        "Top object per city across runs: pittsburgh: earth in 1/1; tokyo: signboard in 2/3, car in 1/3 runs."
    )
    assert section.reading.endswith(
        "median SD of 0.141 (largest 0.141: signboard in tokyo, simple); the architectures' mean R differ "
        "with a median SD of 0.283."
    )
    lines = section.body.splitlines()
    assert lines[0] == "| city | object | simple | simpler |"
    assert f"| tokyo | signboard | 0.800 ± 0.141 (2) | 0.400 ± {DASH} (1) |" in lines
    assert any(line.startswith("| pittsburgh | earth | 0.600 ± – (1) |") for line in lines)
    assert not any("| car |" in line for line in lines)  # neither planted nor on top
    assert section.figure == "fig5_ratios_runs.png" and (tmp_path / section.figure).is_file()


def test_spread_rows_keep_planted_and_top_objects():
    spread = pd.DataFrame(
        {
            "data_group": [1, 1, 1, 1, 2],
            "arch": ["a", "b", "a", "a", "a"],
            "city": ["tokyo", "tokyo", "tokyo", "tokyo", "tokyo"],
            "object": ["car", "car", "fence", "road", "road"],
            "mean": [0.9, 0.1, 0.2, 0.6, 0.1],
        }
    )
    # Group 1: top by mean over architectures is road (0.6; car's mean is 0.5); fence is planted.
    kept = sections.spread_rows(spread, {"tokyo": ["fence"]})
    assert list(zip(kept["data_group"], kept["arch"], kept["object"])) == [
        (1, "a", "fence"),
        (1, "a", "road"),
        (2, "a", "road"),
    ]
    assert sections.spread_rows(spread.iloc[:0], {}).empty


def test_fig6_section(runs, tmp_path):
    # Two pairs of runs x two images: per image the mean over the pairs, 0.3 (p0) and 0.7 (t0).
    matrix = np.array([[0.2, 0.8], [0.4, 0.6]])
    section = sections.fig6_section(runs, matrix, per_city=1, seed=0, out=tmp_path, group=3)
    assert section.title == "Figure 6: the same test images, every run (data group 3)"
    assert section.reading == (
        "The runs agree on the predicted city for 2 of 2 sample images; mean AR across runs per image from "
        "0.300 (p0) to 0.700 (t0). (The data views were not found, so the masks are drawn alone.)"
    )
    assert section.figure == "fig6_examples_runs_g3.png" and (tmp_path / section.figure).is_file()
    images = np.full((2, 4, 4, 3), 200, np.uint8)
    with_views = sections.fig6_section(runs, None, 1, 0, tmp_path, views=lambda run: lambda ids: images)
    assert with_views.reading == "The runs agree on the predicted city for 2 of 2 sample images."
    assert with_views.title == "Figure 6: the same test images, every run"
    assert with_views.figure == "fig6_examples_runs.png"


# ---------------------------------------------------------------- recovery, variants, explainers


def test_recovery_section():
    recovery = pd.DataFrame(
        {
            "label": ["r1", "r1"],
            "city": ["tokyo", "pittsburgh"],
            "k": [2, 1],
            "n_kept": [5, 3],
            "precision_at_k": [1.0, 0.0],
            "separated": [True, False],
            "ranks": ["fence #1, signboard #2", "earth not kept"],
        }
    )
    section = sections.recovery_section(recovery)
    assert section.title == "Planted-object recovery (synthetic data)"
    assert section.body.splitlines()[2:] == [
        "| r1 | tokyo | 2 | 5 | 1.000 | yes | fence #1, signboard #2 |",
        "| r1 | pittsburgh | 1 | 3 | 0.000 | no | earth not kept |",
    ]
    assert section.reading.startswith("Planted cues ranked on top (P@k = 1) in 1 of 2 run-city cases")


def test_variants_section(runs):
    table = tables.variant_table({"v-a": [runs], "v-b": [runs[:1]]})
    table.loc[table["variant"] == "v-b", "planted_p_at_k"] = 0.75
    table.loc[(table["variant"] == "v-a") & (table["arch"] == "simple"), "planted_p_at_k"] = 0.5
    section = sections.variants_section(table, "v-a")
    assert section.reading == (
        "2 analysis variants; the sections above use `v-a`; the highest planted-object P@k is 0.75 "
        "(simple, gradcam at last_block, threshold 0.5)."
    )
    assert len(section.body.splitlines()) == 2 + 3
    one = sections.variants_section(table[table["variant"] == "v-a"].assign(planted_p_at_k=np.nan), "v-a")
    assert one.reading == "1 analysis variant; the sections above use `v-a`."


def test_misclassified_section():
    table = pd.DataFrame(
        {
            "run": ["a", "a", "b", "b"],
            "label": ["A", "A", "B", "B"],
            "city": ["tokyo", "pittsburgh", "tokyo", "pittsburgh"],
            "n_images": [10, 12, 10, 12],
            "misclassified": [1, 0, 3, 2],
        }
    )
    section = sections.misclassified_section(table)
    assert section.reading == "6 of 44 test images (summed over runs) are misclassified."
    assert section.body.splitlines() == [
        "| run | tokyo misclassified | pittsburgh misclassified |",
        "|---|---|---|",
        "| A | 1 | 0 |",
        "| B | 3 | 2 |",
    ]


def test_explainers_section(tmp_path, make_run, make_sweep, hand_masks):
    sweep = make_sweep(tmp_path / "s")
    run_dir = make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    other = Variant(explainer="gradcam++", threshold=0.3, target="prediction")
    make_run(run_dir, "simple", 0, hand_masks["C"], variant=other)
    one_variant = {Variant().name: scan_sweep(sweep, Variant().name)[0]}
    assert sections.explainers_section(one_variant, None, 1, 0, tmp_path) is None
    both = {name: scan_sweep(sweep, name)[0] for name in (Variant().name, other.name)}
    section = sections.explainers_section(both, None, 1, 0, tmp_path)
    assert section.title == "One image, every explainer"
    assert section.reading == (
        "simple-s0: 2 variants side by side on 2 sample test images "
        "(gradcam @ last_block t0.5, gradcam++ @ last_block t0.3 (pred))."
    )
    with Image.open(tmp_path / section.figure) as figure:
        assert section.figure == "fig_explainers.png" and figure.width > 200
