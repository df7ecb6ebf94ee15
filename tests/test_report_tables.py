"""The sweep report's tables (citylens/report/tables.py), on hand-made runs with values known by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citylens.pipeline import Variant
from citylens.pipeline.runs import scan_sweep, stream_residuals
from citylens.report import tables

PLANTED = {"tokyo": ["signboard", "fence"], "pittsburgh": ["skyscraper"]}


def _write(run_dir: Path, filename: str, rows: list[dict], variant: Variant | None = None) -> None:
    folder = (variant or Variant()).dir(run_dir)
    pd.DataFrame(rows).to_csv(folder / filename, index=False)


def _ratios(ratios: dict[str, float], city: str = "tokyo", threshold: float = 0.5) -> list[dict]:
    return [
        {"threshold": threshold, "city": city, "object": o, "ratio": r, "kept": True}
        for o, r in ratios.items()
    ]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, make_run, make_sweep, hand_masks) -> Path:
    """simple-s0 (masks A), simpler-s0 (B), simple-s1 (C), each with object ratios; simpler-s0 has a
    planted-object dataset and a recovery table."""
    sweep = make_sweep(tmp_path_factory.mktemp("tables"))
    planted = {"kind": "synthetic", "planted": PLANTED}
    a = make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"], dataset=planted)
    b = make_run(sweep / "1_simpler-s0", "simpler", 0, hand_masks["B"], dataset=planted)
    c = make_run(sweep / "2_simple-s1", "simple", 1, hand_masks["C"], dataset=planted)
    # Tokyo only; A and C nearly agree, B differs (L1 by hand: A-C 0.05, A-B 0.4, B-C 1.1/3).
    _write(
        a,
        "object_ratios.csv",
        _ratios({"signboard": 0.9, "fence": 0.5}) + _ratios({"road": 0.1}, threshold=0.3),
    )
    _write(b, "object_ratios.csv", _ratios({"signboard": 0.2, "fence": 0.6, "car": 0.4}))
    _write(c, "object_ratios.csv", _ratios({"signboard": 0.8, "fence": 0.5}))
    columns = ["threshold", "city", "k", "n_kept", "precision_at_k", "separated", "planted_ranks"]
    recovery = [
        (0.5, "tokyo", 2, 3, 0.5, False, "(3, 1)"),
        (0.5, "pittsburgh", 1, 0, 0.0, False, "(None,)"),
        (0.3, "tokyo", 2, 1, 0.0, False, "(None, None)"),
    ]
    recovery = [dict(zip(columns, row)) for row in recovery]
    _write(b, "recovery.csv", recovery)
    # Two far-apart clusters of six points, one per city: purity 1.
    tsne = [
        {"x": i + 100.0 * (i >= 6), "y": 0.0, "city": "tokyo" if i < 6 else "pittsburgh"} for i in range(12)
    ]
    _write(a, "tsne.csv", tsne)
    return sweep


@pytest.fixture(scope="module")
def runs(sweep):
    found, ignored = scan_sweep(sweep)
    assert not ignored and [r.label for r in found] == ["simple-s0", "simpler-s0", "simple-s1"]
    return found


@pytest.fixture(scope="module")
def pairs(runs):
    return stream_residuals([r.store for r in runs], [r.name for r in runs])


# ---------------------------------------------------------------- Table 2


def test_paper_ar_either_order_and_nan_when_unknown():
    assert tables.paper_ar("vgg11", "resnet18") == tables.paper_ar("resnet18", "vgg11") == 0.4349
    assert tables.paper_ar("simple", "simple") == 0.2411
    assert math.isnan(tables.paper_ar("vgg11", "convnext"))


def test_table2_per_pair_and_grouped(runs, pairs, hand_ar):
    per_pair, grouped = tables.table2(runs, pairs, n_boot=500)
    assert list(per_pair.columns) == tables.PAIR_COLUMNS and list(grouped.columns) == tables.GROUPED_COLUMNS
    by_pair = {frozenset((r.label_a, r.label_b)): r for r in per_pair.itertuples()}
    expected = {
        ("simple-s0", "simpler-s0"): ("architecture", hand_ar[("B", "A")]),
        ("simpler-s0", "simple-s1"): ("architecture", hand_ar[("B", "C")]),
        ("simple-s0", "simple-s1"): ("seed", hand_ar[("A", "C")]),
    }
    assert set(by_pair) == {frozenset(k) for k in expected}
    for key, (group, ar) in expected.items():
        row = by_pair[frozenset(key)]
        assert row.group == group and row.ar == pytest.approx(ar, rel=1e-5) and row.n_images == 2
        assert row.ci_low <= row.ar + 1e-9 <= row.ci_high + 2e-9
    seed_pair = by_pair[frozenset(("simple-s0", "simple-s1"))]
    # Per image the seed pair differs in 1 and 0 of the pixels: the two places' bootstrap spans 0..1.
    assert (seed_pair.ci_low, seed_pair.ci_high) == pytest.approx((0.0, 1.0), abs=1e-6)
    assert grouped["pair"].tolist() == ["simple vs simpler", "simple vs simple retrained"]
    assert grouped["group"].tolist() == ["architecture", "seed"]
    assert grouped["n_pairs"].tolist() == [2, 1]
    assert grouped["ar"].tolist() == pytest.approx([0.75, 0.5], rel=1e-5)
    spread = np.std([hand_ar[("B", "A")], hand_ar[("B", "C")]], ddof=1)
    assert grouped["seed_sd"].iloc[0] == pytest.approx(spread, rel=1e-5) and np.isnan(
        grouped["seed_sd"].iloc[1]
    )
    assert grouped["paper_ar"].tolist() == [0.3149, 0.2411]


def test_table2_without_pairs_is_empty(runs):
    per_pair, grouped = tables.table2(runs[:1], None)
    assert per_pair.empty and list(per_pair.columns) == tables.PAIR_COLUMNS
    assert grouped.empty and list(grouped.columns) == tables.GROUPED_COLUMNS


# ---------------------------------------------------------------- ratio profiles and their spread


def test_ratio_distances_by_hand(runs):
    distances = tables.ratio_distances(runs, threshold=0.5).set_index(["label_a", "label_b"])
    assert distances["l1"].to_dict() == pytest.approx(
        {
            ("simple-s0", "simpler-s0"): 0.4,
            ("simple-s0", "simple-s1"): 0.05,
            ("simpler-s0", "simple-s1"): 1.1 / 3,
        }
    )
    assert distances["group"].to_dict() == {
        ("simple-s0", "simpler-s0"): "architecture",
        ("simple-s0", "simple-s1"): "seed",
        ("simpler-s0", "simple-s1"): "architecture",
    }
    js = distances["js"]
    assert (js > 0).all() and (js <= 1).all()
    assert js[("simple-s0", "simple-s1")] < js[("simple-s0", "simpler-s0")]


def test_ratio_distances_skip_pairs_without_a_common_city(runs):
    # At threshold 0.3 only simple-s0 has rows: no pair can be compared.
    empty = tables.ratio_distances(runs, threshold=0.3)
    assert empty.empty and list(empty.columns) == [
        "group",
        "run_a",
        "run_b",
        "label_a",
        "label_b",
        "l1",
        "js",
    ]


def test_ratio_spread_by_hand(runs):
    spread = tables.ratio_spread([runs], threshold=0.5)
    assert list(spread.columns) == tables.SPREAD_COLUMNS
    rows = spread.set_index(["arch", "object"])
    signboard = rows.loc[("simple", "signboard")]
    assert signboard["n_runs"] == 2 and signboard["mean"] == pytest.approx(0.85)
    assert signboard["seed_sd"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert (signboard["low"], signboard["high"]) == pytest.approx((0.8, 0.9))
    assert rows.loc[("simple", "fence"), "seed_sd"] == 0
    car = rows.loc[("simpler", "car")]
    assert car["n_runs"] == 1 and car["mean"] == pytest.approx(0.4) and np.isnan(car["seed_sd"])
    assert ("simple", "road") not in rows.index  # another threshold
    assert set(spread["data_group"]) == {1}
    two = tables.ratio_spread([runs[:1], runs[2:]], threshold=0.5)
    assert two.groupby("data_group")["n_runs"].sum().to_dict() == {1: 2, 2: 2}


def test_ratio_spread_without_ratios_is_empty():
    assert tables.ratio_spread([], 0.5).empty
    assert list(tables.ratio_spread([], 0.5).columns) == tables.SPREAD_COLUMNS


# ---------------------------------------------------------------- tests over relabellings


def test_run_matrix(runs):
    table = pd.DataFrame(
        {"run_a": ["0_simple-s0", "0_simple-s0"], "run_b": ["2_simple-s1", "1_simpler-s0"], "v": [0.1, 0.2]}
    )
    matrix, archs = tables.run_matrix(runs, table, "v")
    assert archs == ["simple", "simpler", "simple"]
    expected = np.array([[0.0, 0.2, 0.1], [0.2, 0.0, np.nan], [0.1, np.nan, 0.0]])
    np.testing.assert_array_equal(matrix, expected)
    only_two = tables.run_matrix(runs, table.iloc[:1], "v")
    np.testing.assert_array_equal(only_two[0], [[0.0, 0.1], [0.1, 0.0]])
    assert only_two[1] == ["simple", "simple"]


def test_comparison_tests_by_hand(runs, pairs):
    per_pair, _ = tables.table2(runs, pairs, n_boot=100)
    distances = tables.ratio_distances(runs, threshold=0.5)
    result = tables.comparison_tests(runs, per_pair, distances)
    assert list(result.columns) == tables.TEST_COLUMNS
    assert result["primary"].tolist() == [True, False, False]
    ar, l1, js = (result.iloc[i] for i in range(3))
    assert ar["between_mean"] == pytest.approx(0.75, rel=1e-5) and ar["within_mean"] == pytest.approx(
        0.5, rel=1e-5
    )
    assert (ar["n_between"], ar["n_within"], ar["n_relabellings"]) == (2, 1, 3)
    # Three runs, two of one architecture: 3 relabellings, and the observed one is the most extreme.
    assert ar["p_value"] == pytest.approx(1 / 3) and ar["p_adjusted"] == ar["p_value"]
    assert ar["test"] == "runs relabelled, every relabelling"
    assert l1["between_mean"] == pytest.approx((0.4 + 1.1 / 3) / 2) and l1["within_mean"] == pytest.approx(
        0.05
    )
    assert l1["p_value"] == pytest.approx(1 / 3) and js["p_value"] == pytest.approx(1 / 3)
    # Holm over the two secondary tests: 2 x 1/3 for both.
    assert l1["p_adjusted"] == pytest.approx(2 / 3) and js["p_adjusted"] == pytest.approx(2 / 3)


def test_comparison_tests_with_an_agreement_table_and_missing_tests(runs):
    names = [r.name for r in runs]
    agreement = pd.DataFrame(
        {
            "group": ["architecture", "seed", "architecture"],
            "run_a": [names[0], names[0], names[1]],
            "run_b": [names[1], names[2], names[2]],
            "distance": [0.9, 0.1, 0.8],
        }
    )
    no_seed_pairs = pd.DataFrame(
        {"group": ["architecture"], "run_a": [names[0]], "run_b": [names[1]], "ar": [0.7]}
    )
    result = tables.comparison_tests(
        runs, no_seed_pairs, agreement.iloc[:0].assign(l1=[], js=[]), agreement=agreement
    )
    assert len(result) == 4 and result["comparison"].iloc[3] == tables.IMPORTANCE_COMPARISON
    ar = result.iloc[0]
    assert np.isnan(ar["p_value"]) and ar["n_relabellings"] == 0 and ar["test"] == "runs relabelled"
    assert ar["between_mean"] == pytest.approx(0.7) and np.isnan(ar["within_mean"])
    assert result[["n_between", "n_within"]].iloc[1].tolist() == [0, 0]
    importance = result.iloc[3]
    assert importance["p_value"] == pytest.approx(1 / 3)
    # The only finite secondary p: Holm leaves it alone.
    assert importance["p_adjusted"] == pytest.approx(1 / 3) and result["p_adjusted"].iloc[1:3].isna().all()


def test_a_missing_pair_leaves_the_test_undone(runs):
    names = [r.name for r in runs]
    table = pd.DataFrame(
        {
            "group": ["architecture", "seed"],
            "run_a": [names[0], names[0]],
            "run_b": [names[1], names[2]],
            "ar": [0.7, 0.1],
        }
    )
    row = tables.comparison_tests(
        runs, table, pd.DataFrame(columns=["group", "run_a", "run_b", "l1", "js"])
    ).iloc[0]
    assert (row["n_between"], row["n_within"]) == (1, 1)
    assert np.isnan(row["p_value"]) and row["n_relabellings"] == 0


# ---------------------------------------------------------------- planted-object recovery


@pytest.mark.parametrize(
    ("names", "ranks", "text"),
    [
        (["fence", "signboard"], "(3, 12)", "fence #3, signboard #12"),
        (["fence", "signboard"], "[3, None]", "fence #3, signboard not kept"),
        (["fence", "signboard"], (1, 2), "fence #1, signboard #2"),
        (["fence"], [None], "fence not kept"),
        (["fence", "signboard"], "(3,)", "(3,)"),  # another length: shown as it is
        (["fence"], 5, "5"),
    ],
)
def test_ranked(names, ranks, text):
    assert tables._ranked(names, ranks) == text


@pytest.mark.parametrize(
    "ranks", ["(np.int64(3), np.int64(1))", "not a list", "", "[3, 1", float("nan"), None]
)
def test_ranked_treats_unreadable_or_missing_ranks_as_missing(ranks):
    assert tables._ranked(["fence", "signboard"], ranks) == "–"


def test_recovery_table(runs):
    table = tables.recovery_table(runs, threshold=0.5)
    # Only simpler-s0 has a recovery table (and planted objects).
    assert table.columns.tolist() == [
        "run", "label", "city", "k", "n_kept", "precision_at_k", "separated", "planted_ranks", "ranks"
    ]  # fmt: skip
    assert table["label"].tolist() == ["simpler-s0", "simpler-s0"]
    assert table["ranks"].tolist() == ["signboard #3, fence #1", "skyscraper not kept"]
    assert table["precision_at_k"].tolist() == [0.5, 0.0]
    assert tables.recovery_table(runs, threshold=0.3)["ranks"].tolist() == [
        "signboard not kept, fence not kept"
    ]
    assert tables.recovery_table(runs, threshold=0.9).empty


def test_recovery_table_with_an_unreadable_rank_cell(runs):
    run = runs[1]
    original = run.table("recovery.csv")
    try:
        run._tables["recovery.csv"] = original.assign(
            planted_ranks=["(np.int64(3), np.int64(1))", "(None,)", "x"]
        )
        table = tables.recovery_table([run], threshold=0.5)
    finally:
        run._tables["recovery.csv"] = original
    assert table["ranks"].tolist() == ["–", "skyscraper not kept"]


def test_recovery_table_without_planted_objects_is_empty(tmp_path, make_run, hand_masks):
    run_dir = make_run(tmp_path / "sweep" / "0_simple-s0", "simple", 0, hand_masks["A"])
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    _write(run_dir, "recovery.csv", [{"threshold": 0.5, "city": "tokyo", "planted_ranks": "(1,)"}])
    runs, _ = scan_sweep(tmp_path / "sweep")
    assert runs[0].planted == {} and tables.recovery_table(runs, 0.5).empty


# ---------------------------------------------------------------- t-SNE, variants, misclassified


def test_tsne_purity_by_hand():
    # Two tight clusters of five, one per city: 4 of each point's 5 nearest neighbours share its city.
    xs = np.r_[np.arange(5) * 0.1, 10 + np.arange(5) * 0.1]
    clean = pd.DataFrame({"x": xs, "y": 0.0, "city": ["a"] * 5 + ["b"] * 5})
    assert tables.tsne_purity(clean) == 1.0
    # Three per city: only 2 of the 5 neighbours share the city, no majority.
    small = pd.DataFrame({"x": [0, 0.1, 0.2, 10, 10.1, 10.2], "y": 0.0, "city": list("aaabbb")})
    assert tables.tsne_purity(small, k=5) == 0.0 and tables.tsne_purity(small, k=2) == 1.0
    # One point of b sits inside a's cluster: it alone goes wrong at k=3.
    mixed = clean.assign(city=["a", "a", "b", "a", "a", "b", "b", "b", "b", "b"])
    assert tables.tsne_purity(mixed, k=3) == pytest.approx(0.9)
    nan_row = pd.DataFrame({"x": [np.nan], "y": [0.0], "city": ["b"]})
    assert tables.tsne_purity(pd.concat([clean, nan_row], ignore_index=True), k=3) == 1.0
    assert math.isnan(tables.tsne_purity(clean.iloc[:3], k=3))


def test_variant_table_one_row_per_architecture(runs, hand_ar):
    table = tables.variant_table({Variant().name: [runs]})
    rows = table.set_index("arch")
    assert rows.index.tolist() == ["simple", "simpler"]
    assert rows.loc["simple", "n_runs"] == 2 and rows.loc["simpler", "n_runs"] == 1
    assert rows.loc["simple", "ar_seeds"] == pytest.approx(hand_ar[("A", "C")], rel=1e-5)
    assert np.isnan(rows.loc["simpler", "ar_seeds"])
    assert rows.loc["simpler", "planted_p_at_k"] == pytest.approx(0.25)  # mean of 0.5 and 0.0
    assert np.isnan(rows.loc["simple", "planted_p_at_k"])
    assert rows.loc["simple", "tsne_purity"] == 1.0 and np.isnan(rows.loc["simpler", "tsne_purity"])
    default = Variant()
    assert (rows.loc["simple", "explainer"], rows.loc["simple", "threshold"]) == (
        default.explainer,
        default.threshold,
    )
    assert set(table["data_group"]) == {1} and set(table["variant"]) == {default.name}


def test_misclassified_table(runs):
    store = runs[0].store
    assert (store.preds == store.targets).all()
    table = tables.misclassified_table(runs[:1])
    assert table.to_dict("records") == [
        {"run": "0_simple-s0", "label": "simple-s0", "city": "pittsburgh", "n_images": 1, "misclassified": 0},
        {"run": "0_simple-s0", "label": "simple-s0", "city": "tokyo", "n_images": 1, "misclassified": 0},
    ]


def test_misclassified_table_counts_wrong_predictions(tmp_path, make_run, hand_masks):
    ids = ["pittsburgh/p0", "tokyo/t0", "tokyo/t1", "tokyo/t2"]
    run_dir = make_run(
        tmp_path / "sweep" / "0_simple-s0", "simple", 0, np.concatenate([hand_masks["A"]] * 2), ids=ids
    )
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    probs_path = Variant().dir(run_dir) / "masks" / "probs.npy"
    probs = np.load(probs_path)
    probs[[1, 3]] = probs[[1, 3], ::-1]  # two Tokyo images predicted as Pittsburgh
    np.save(probs_path, probs)
    runs, _ = scan_sweep(tmp_path / "sweep")
    table = tables.misclassified_table(runs).set_index("city")
    assert table["n_images"].to_dict() == {"pittsburgh": 1, "tokyo": 3}
    assert table["misclassified"].to_dict() == {"pittsburgh": 0, "tokyo": 2}
