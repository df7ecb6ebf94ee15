"""Object ratios on hand-made masks and label maps, the streaming form, the summary and planted recovery."""

import numpy as np
import pandas as pd
import pytest
import torch

from citylens.analysis.ratios import RatioAccumulator, object_ratios, planted_recovery, ratio_summary
from citylens.core.ade20k import UNLABELLED, class_index

SKY, BUILDING, TREE, ROAD, CAR = (class_index(n) for n in ("sky", "building", "tree", "road", "car"))
U = UNLABELLED


def _hand_made() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two tokyo images and one pittsburgh image, 4x4 (expected numbers worked out in the tests below)."""
    labels = np.array(
        [
            [[SKY] * 4, [BUILDING] * 4, [BUILDING, BUILDING, TREE, TREE], [ROAD] * 4],
            [[SKY] * 4, [U] * 4, [TREE] * 4, [ROAD] * 4],
            [[BUILDING] * 4, [BUILDING] * 4, [BUILDING] * 4, [CAR] * 4],
        ],
        dtype=np.uint8,
    )
    masks = np.array(
        [
            [[0.9] * 4, [0.6, 0.6, 0.2, 0.2], [0.5, 0.4, 0.7, 0.1], [0.0] * 4],
            [[0.3] * 4, [1.0] * 4, [0.8, 0.8, 0.8, 0.2], [0.5] * 4],
            [[0.55] * 4, [0.55] * 4, [0.55] * 4, [0.45] * 4],
        ],
        dtype=np.float32,
    )
    return masks, labels, ["tokyo", "tokyo", "pittsburgh"]


def _row(table: pd.DataFrame, t: float, city: str, obj: str) -> pd.Series:
    sel = table[(table["threshold"] == t) & (table["city"] == city) & (table["object"] == obj)]
    assert len(sel) == 1, (t, city, obj)
    return sel.iloc[0]


def test_hand_computed_ratios_two_thresholds():
    masks, labels, cities = _hand_made()
    table = object_ratios(masks, labels, cities, threshold=[0.5, 0.7], min_mean_pixels=3.5)
    assert list(table["threshold"].unique()) == [0.5, 0.7]
    columns = {"city", "object", "ratio", "explained_pixels", "total_pixels", "mean_pixels", "kept"}
    assert columns <= set(table)
    # (threshold, city, object): explained, total, mean pixels per image of the city, kept (mean > 3.5)
    expected = {
        (0.5, "tokyo", "sky"): (4, 8, 4.0, True),
        (0.5, "tokyo", "building"): (3, 6, 3.0, False),
        (0.5, "tokyo", "tree"): (4, 6, 3.0, False),
        (0.5, "tokyo", "road"): (4, 8, 4.0, True),
        (0.5, "pittsburgh", "building"): (12, 12, 12.0, True),
        (0.5, "pittsburgh", "car"): (0, 4, 4.0, True),
        (0.7, "tokyo", "sky"): (4, 8, 4.0, True),
        (0.7, "tokyo", "building"): (0, 6, 3.0, False),
        # float32 0.7 >= 0.7 compared in the mask's precision, as `mask >= 0.7` does
        (0.7, "tokyo", "tree"): (4, 6, 3.0, False),
        (0.7, "tokyo", "road"): (0, 8, 4.0, True),
        (0.7, "pittsburgh", "building"): (0, 12, 12.0, True),
        (0.7, "pittsburgh", "car"): (0, 4, 4.0, True),
    }
    assert len(table) == len(expected)
    for (t, city, obj), (explained, total, mean, kept) in expected.items():
        row = _row(table, t, city, obj)
        assert row["explained_pixels"] == explained and row["total_pixels"] == total
        assert row["ratio"] == pytest.approx(explained / total)
        assert row["mean_pixels"] == pytest.approx(mean)
        assert bool(row["kept"]) is kept
    # absent objects have no row; unlabelled pixels (img 1, row 1, mask 1.0) are counted nowhere
    assert not ((table["city"] == "pittsburgh") & (table["object"] == "sky")).any()
    assert "unlabelled" not in set(table["object"])
    assert table.groupby("threshold")["total_pixels"].sum().tolist() == [3 * 16 - 4] * 2


def test_scalar_threshold_and_torch_input_match_numpy():
    masks, labels, cities = _hand_made()
    a = object_ratios(masks, labels, cities, threshold=0.5)
    b = object_ratios(torch.from_numpy(masks), torch.from_numpy(labels), cities, threshold=0.5)
    pd.testing.assert_frame_equal(a, b)
    assert (a["threshold"] == 0.5).all()
    assert not a["kept"].any()  # default min_mean_pixels=100 on 4x4 images


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    n = 23
    masks = rng.random((n, 9, 11)).astype(np.float32)
    labels = rng.choice([SKY, BUILDING, TREE, ROAD, CAR, 100, U], size=(n, 9, 11)).astype(np.uint8)
    cities = list(rng.choice(["tokyo", "pittsburgh", "paris"], size=n))
    thresholds = [0.7, 0.2, 0.5]
    one_shot = object_ratios(masks, labels, cities, thresholds, min_mean_pixels=10)
    acc = RatioAccumulator(thresholds, min_mean_pixels=10)
    for s, e in [(0, 1), (1, 8), (8, 8), (8, 20), (20, 23)]:
        acc.update(masks[s:e], labels[s:e], cities[s:e])
    pd.testing.assert_frame_equal(acc.table(), one_shot)
    # direct check of one cell against the definition
    sel = [i for i, c in enumerate(cities) if c == "paris"]
    lab, m = labels[sel], masks[sel]
    row = _row(one_shot, 0.2, "paris", "tree")
    assert row["total_pixels"] == (lab == TREE).sum()
    assert row["explained_pixels"] == ((lab == TREE) & (m >= 0.2)).sum()
    assert row["mean_pixels"] == pytest.approx((lab == TREE).sum() / len(sel))


def test_validation():
    masks, labels, cities = _hand_made()
    with pytest.raises(ValueError, match="analysis.threshold"):
        object_ratios(masks, labels, cities, threshold=1.5)
    with pytest.raises(ValueError, match="analysis.threshold"):
        object_ratios(masks, labels, cities, threshold=[0.5, -0.1])
    with pytest.raises(ValueError):
        object_ratios(masks[:, :3], labels, cities, threshold=0.5)
    with pytest.raises(ValueError):
        object_ratios(masks, labels, cities[:2], threshold=0.5)
    with pytest.raises(ValueError):
        object_ratios(masks * 2, labels, cities, threshold=0.5)
    for value, dtype in [(200, np.uint8), (300, np.int64), (-1, np.int64)]:
        bad = labels.astype(dtype)
        bad[1, 0, 0] = value
        acc = RatioAccumulator(0.5)
        with pytest.raises(ValueError, match="label maps"):
            acc.update(masks, bad, cities)
        assert acc.table().empty  # a refused chunk leaves no partial counts


def _table(rows: list[tuple[str, str, float, bool]], t: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "threshold": t,
            "city": [r[0] for r in rows],
            "object": [r[1] for r in rows],
            "ratio": [r[2] for r in rows],
            "explained_pixels": [int(r[2] * 1000) for r in rows],
            "total_pixels": 1000,
            "mean_pixels": 500.0,
            "kept": [r[3] for r in rows],
        }
    )


def test_summary_uniform_vs_peaked():
    objs = ["sky", "building", "tree", "road", "car"]
    uniform = [("a", o, 0.3, True) for o in objs] + [("a", "person", 0.9, False)]
    peaked = [("b", "sky", 0.9, True)] + [("b", o, 0.02, True) for o in objs[1:]]
    summary = ratio_summary(_table(uniform + peaked)).set_index("city")
    assert summary.loc["a", "evenness"] == pytest.approx(1.0)
    assert summary.loc["a", "gini"] == pytest.approx(0.0)
    assert summary.loc["a", "n_kept"] == 5
    assert summary.loc["a", "top_share"] == pytest.approx(0.2)
    assert summary.loc["b", "evenness"] < 0.5
    assert summary.loc["b", "selectivity"] > 0.5
    assert summary.loc["b", "gini"] > 0.5
    assert summary.loc["b", "top_object"] == "sky"


def test_planted_recovery():
    rows = [
        ("a", "tree", 0.9, True),
        ("a", "sky", 0.8, True),
        ("a", "road", 0.2, True),
        ("b", "road", 0.5, True),
        ("b", "car", 0.3, True),
        ("b", "tree", 0.3, True),
        ("b", "fence", 0.99, False),
    ]
    out = planted_recovery(_table(rows), {"a": ["tree", "sky"], "b": ["tree", "fence"]}).set_index("city")
    assert out.loc["a", "k"] == 2 and out.loc["a", "precision_at_k"] == 1.0
    assert bool(out.loc["a", "separated"]) and out.loc["a", "planted_ranks"] == (1, 2)
    # b ranking: road 0.5, car 0.3, tree 0.3 (tie broken by name); fence is not kept
    assert out.loc["b", "precision_at_k"] == 0.0
    assert not out.loc["b", "separated"]
    assert out.loc["b", "planted_ranks"] == (3, None)
    with pytest.raises(KeyError):
        planted_recovery(_table(rows), {"a": ["not an object"]})


def test_ratio_intervals_resample_places():
    masks, labels, cities = _hand_made()
    rng = np.random.default_rng(0)
    # 40 tokyo images in 20 places of two identical views, plus the pittsburgh image
    picks = np.r_[np.repeat(rng.integers(0, 2, 20), 2), 2]
    m = np.clip(masks[picks] + rng.normal(0, 0.2, masks[picks].shape), 0, 1).astype(np.float32)
    m[1::2][:20] = m[0::2][:20]
    lab, cit = labels[picks], [cities[i] for i in picks]
    places = [f"p{i // 2}" for i in range(40)] + ["q"]
    table = object_ratios(m, lab, cit, 0.5, min_mean_pixels=0, places=places, n_boot=400)
    sky = _row(table, 0.5, "tokyo", "sky")
    assert sky["ci_low"] <= sky["ratio"] <= sky["ci_high"] and sky["ci_low"] < sky["ci_high"]
    car = _row(table, 0.5, "pittsburgh", "car")  # one place: nothing to resample, a zero-width interval
    assert car["ci_low"] == car["ci_high"] == pytest.approx(car["ratio"])
    # one place per pair of identical views = one image per place, once: the same interval
    single = object_ratios(m[:40:2], lab[:40:2], cit[:40:2], 0.5, 0, places=places[:40:2], n_boot=400)
    assert _row(single, 0.5, "tokyo", "sky")[["ci_low", "ci_high"]].tolist() == pytest.approx(
        sky[["ci_low", "ci_high"]].tolist()
    )
    views = object_ratios(m, lab, cit, 0.5, min_mean_pixels=0, n_boot=400)  # every view its own place
    vs = _row(views, 0.5, "tokyo", "sky")
    assert vs["ci_high"] - vs["ci_low"] < sky["ci_high"] - sky["ci_low"]
    acc = RatioAccumulator(0.5, 0)
    for s in range(0, 41, 7):
        acc.update(m[s : s + 7], lab[s : s + 7], cit[s : s + 7], places[s : s + 7])
    pd.testing.assert_frame_equal(acc.table(400), table)
    no_places = RatioAccumulator(0.5, 0)
    no_places.update(m, lab, cit)
    assert no_places.table()["ratio"].tolist() == table["ratio"].tolist()
    with pytest.raises(ValueError, match="places"):
        no_places.table(n_boot=10)
