"""report.md's Markdown tables and one-line readings (citylens/report/markdown.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from citylens.report import markdown as md

DASH = "–"


# ---------------------------------------------------------------- cells


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (0.12345, 3, "0.123"),
        (0.12355, 2, "0.12"),
        (2.0, 4, "2.0000"),
        (np.float64(0.5), 3, "0.500"),
        (np.float32(0.25), 3, "0.250"),
        (np.float16(1.5), 1, "1.5"),
        (3, 3, "3"),
        (np.int64(7), 3, "7"),
        ("gradcam", 3, "gradcam"),
        (True, 3, "yes"),
        (False, 3, "no"),
        (np.bool_(True), 3, "yes"),
        (np.bool_(False), 3, "no"),
        (None, 3, DASH),
    ],
)
def test_fmt(value, digits, text):
    assert md.fmt(value, digits) == text


@pytest.mark.parametrize("kind", [float, np.float64, np.float32, np.float16])
@pytest.mark.parametrize("special", ["nan", "inf", "-inf"])
def test_fmt_writes_every_float_type_s_nan_and_infinity_as_a_dash(kind, special):
    value = kind(special)
    assert md.fmt(value) == md.fmt(float(special)) == DASH


def test_fmt_of_a_float32_column_cell_in_a_table():
    table = pd.DataFrame({"a": np.array([0.5, np.nan], np.float32)})
    assert md.md_table(table, {"a": "A"}).splitlines()[2:] == ["| 0.500 |", f"| {DASH} |"]


@pytest.mark.parametrize(
    ("p", "text"),
    [(0.0004, "p < 0.001"), (0.001, "p = 0.001"), (0.04567, "p = 0.0457"), (0.5, "p = 0.5"), (1.0, "p = 1")],
)
def test_p_text(p, text):
    assert md.p_text(p) == text


def test_md_table_picks_renames_and_orders_columns():
    table = pd.DataFrame({"b": [1.23456, None], "a": ["x", "y"], "unused": [0, 0]})
    assert md.md_table(table, {"a": "first", "b": "second"}, digits=2) == (
        f"| first | second |\n|---|---|\n| x | 1.23 |\n| y | {DASH} |"
    )


def test_role_and_interval():
    assert md.role(True) == "primary" and md.role(False) == "secondary"
    row = pd.Series({"ar": 0.31204, "ci_low": 0.29801, "ci_high": np.nan})
    assert md.interval(row) == f"0.3120 [0.2980, {DASH}]"
    assert md.interval(row, digits=2) == f"0.31 [0.30, {DASH}]"


# ---------------------------------------------------------------- readings


def _test(b=0.4, w=0.2, nb=4, nw=2, p=0.01, n=105, primary=True) -> pd.Series:
    return pd.Series(
        {
            "between_mean": b,
            "within_mean": w,
            "n_between": nb,
            "n_within": nw,
            "p_adjusted": p,
            "n_relabellings": n,
            "primary": primary,
        }
    )


def test_reading_comparison_significant_primary():
    text = md.reading_comparison(_test(p=0.0004), "masks", "AR", 4)
    assert text == (
        "masks differ more between architectures than between seeds: mean AR 0.400 vs 0.200, p < 0.001 "
        "(4 vs 2 pairs; 105 relabellings of the runs, so p >= 0.010)."
    )


def test_reading_comparison_secondary_says_holm_and_the_verdicts():
    text = md.reading_comparison(_test(p=0.2, primary=False), "profiles", "L1", 4)
    assert text.startswith("profiles differ somewhat more between architectures than between seeds, but not")
    assert "mean L1 0.400 vs 0.200, Holm-adjusted p = 0.2 " in text
    lower = md.reading_comparison(_test(b=0.1, w=0.2, p=0.9), "masks", "AR", 4)
    assert lower.startswith("masks do not differ more between architectures than between seeds: ")
    assert "Holm" not in lower


def test_reading_comparison_without_a_test():
    assert md.reading_comparison(_test(nb=0, nw=0), "masks", "AR", 1) == (
        "No masks to compare: the comparison needs two finished runs (1 here)."
    )
    assert "no seed pairs" in md.reading_comparison(_test(nw=0), "masks", "AR", 2)
    assert "Mean AR between architectures 0.400;" in md.reading_comparison(_test(nw=0), "masks", "AR", 2)
    one_arch = md.reading_comparison(_test(nb=0), "masks", "AR", 2)
    assert one_arch.startswith("Mean AR between seeds of one architecture 0.200; one architecture only")
    assert md.reading_comparison(_test(p=float("nan")), "masks", "AR", 4) == (
        "Mean AR between architectures 0.400 vs between seeds 0.200; not tested."
    )


def test_reading_table2():
    grouped = pd.DataFrame(
        {
            "group": ["architecture", "architecture", "seed", "seed"],
            "ar": [0.4, 0.5, 0.2, 0.9],
            "paper_ar": [0.43, 0.41, 0.25, np.nan],
        }
    )
    assert md.reading_table2(grouped) == (
        "Against the paper's Table 2 for the same groups: architecture pairs 0.450 here vs 0.420 in the "
        "paper; seed pairs 0.200 here vs 0.250 in the paper."
    )
    unknown = grouped.assign(paper_ar=np.nan)
    assert md.reading_table2(unknown) == "The paper has no values for these architectures."
    only_arch = grouped[grouped["group"] == "architecture"]
    assert "seed pairs" not in md.reading_table2(only_arch)


def test_reading_heatmap():
    pairs = pd.DataFrame(
        {"label_a": ["a", "a", "b"], "label_b": ["b", "c", "c"], "ar": [0.3, 0.1, 0.5]},
        index=[10, 11, 12],
    )
    assert md.reading_heatmap(pairs) == "Most alike: a vs c (AR 0.100); most different: b vs c (AR 0.500)."


def test_reading_tsne():
    assert md.reading_tsne({"a": 0.9, "b": float("nan"), "c": 0.6}) == (
        "Cities separate in the mask maps with a 5-nearest-neighbour city purity from 0.60 (c) to 0.90 (a); "
        "mean 0.75 (0.5 = no separation for two balanced cities)."
    )
    assert md.reading_tsne({"a": float("nan")}).startswith("No run has a usable t-SNE map")
    assert md.reading_tsne({}).startswith("No run has a usable t-SNE map")


def test_reading_ratios():
    top = {"tokyo": ["signboard", "fence", "signboard"], "pittsburgh": ["earth"]}
    assert md.reading_ratios(top) == (
        "Top object per city across runs: tokyo: signboard in 2/3, fence in 1/3; "
        "pittsburgh: earth in 1/1 runs."
    )
    assert md.reading_ratios({}).startswith("No run has object ratios (")


def _spread(sd=(0.01, 0.05, np.nan), groups=(1, 1, 1)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "data_group": list(groups),
            "arch": ["vgg11", "resnet18", "simple"],
            "city": ["tokyo"] * 3,
            "object": ["fence"] * 3,
            "n_runs": [2, 2, 1],
            "mean": [0.5, 0.7, 0.9],
            "seed_sd": list(sd),
        }
    )


def test_spread_table_one_column_per_architecture():
    text = md.spread_table(_spread())
    lines = text.split("\n\n")[0].splitlines()
    assert lines[0] == "| city | object | vgg11 | resnet18 | simple |"
    assert lines[2] == f"| tokyo | fence | 0.500 ± 0.010 (2) | 0.700 ± 0.050 (2) | 0.900 ± {DASH} (1) |"
    assert "mean ± SD across its seeds" in text


def test_spread_table_names_the_data_group_when_there_are_several():
    shown = pd.concat([_spread(), _spread(groups=(2, 2, 2)).iloc[:1]], ignore_index=True)
    lines = md.spread_table(shown).split("\n\n")[0].splitlines()
    assert lines[0] == "| data group | city | object | vgg11 | resnet18 | simple |"
    assert lines[3] == f"| 2 | tokyo | fence | 0.500 ± 0.010 (2) | {DASH} | {DASH} |"


def test_reading_spread():
    text = md.reading_spread(_spread())
    assert text == (
        "Across seeds of one architecture R of the objects below varies with a median SD of 0.030 (largest "
        "0.050: fence in tokyo, resnet18); the architectures' mean R differ with a median SD of 0.200."
    )
    assert md.reading_spread(_spread().iloc[:0]) == ""
    assert md.reading_spread(_spread(sd=(np.nan,) * 3)) == (
        "With one run per architecture, the spread of R across seeds is unknown."
    )


def test_reading_examples():
    assert md.reading_examples(3, 4, [0.2, 0.1, 0.4], ["a", "b", "c"]) == (
        "The runs agree on the predicted city for 3 of 4 sample images; mean AR across runs per image from "
        "0.100 (b) to 0.400 (c)."
    )
    assert (
        md.reading_examples(0, 0, [], []) == "The runs agree on the predicted city for 0 of 0 sample images."
    )


def test_reading_recovery():
    recovery = pd.DataFrame(
        {"precision_at_k": [1.0, 0.5, 1.0], "label": ["r1", "r2", "r3"], "city": ["tokyo", "pgh", "pgh"]}
    )
    assert md.reading_recovery(recovery) == (
        "Planted cues ranked on top (P@k = 1) in 2 of 3 run-city cases, mean P@k 0.83; lowest: r2 in pgh "
        "(P@k 0.50)."
    )
