"""Place bootstrap, the test over run relabellings (size, power), Holm, the ratio-profile distance."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from citylens.analysis.stats import (
    bootstrap_ci,
    group_index,
    holm,
    n_distinct_relabellings,
    ratio_ci,
    ratio_profile_distance,
    relabel_test,
)


def test_bootstrap_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(100), rng.random(10000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=500, seed=1)
    lo_l, hi_l = bootstrap_ci(large, n_boot=500, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)
    assert bootstrap_ci(small, n_boot=500, seed=1) == (lo_s, hi_s)
    assert bootstrap_ci(np.array([0.3]), n_boot=50) == (pytest.approx(0.3), pytest.approx(0.3))


def test_bootstrap_2d_resamples_same_images_for_all_rows():
    x = np.random.default_rng(2).random(300)
    lo, hi = bootstrap_ci(np.stack([x, x + 1.0, 2 * x]), n_boot=400, seed=3)
    lo1, hi1 = bootstrap_ci(x, n_boot=400, seed=3)
    assert lo.shape == (3,)
    np.testing.assert_allclose([lo[0], hi[0]], [lo1, hi1])
    np.testing.assert_allclose([lo[1], hi[1]], [lo1 + 1, hi1 + 1])
    np.testing.assert_allclose([lo[2], hi[2]], [2 * lo1, 2 * hi1])
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([0.1, np.nan]))


def test_bootstrap_resamples_places_not_views():
    rng = np.random.default_rng(4)
    x = rng.random(60)
    alone = bootstrap_ci(x, n_boot=500, seed=5)
    tenfold = np.repeat(x, 10)
    places = np.repeat([f"pano{i}" for i in range(60)], 10)
    # every image seen 10 times as one place: the same evidence, the same interval (not sqrt(10) narrower)
    assert bootstrap_ci(tenfold, n_boot=500, seed=5, groups=places) == pytest.approx(alone)
    lo, hi = bootstrap_ci(tenfold, n_boot=500, seed=5)
    assert hi - lo < 0.5 * (alone[1] - alone[0])  # treating views as independent would shrink it
    # places of unequal size: each replicate is the mean over all images of the drawn places
    lo2, hi2 = bootstrap_ci(np.stack([tenfold, tenfold]), n_boot=300, seed=1, groups=places)
    np.testing.assert_allclose(lo2[0], lo2[1])
    with pytest.raises(ValueError, match="one place per value"):
        bootstrap_ci(x, groups=places)


def test_group_index_numbers_places_in_order_of_appearance():
    assert group_index(["b", "a", "b", "c"], 4).tolist() == [0, 1, 0, 2]


def test_bootstrap_agrees_with_scipy():
    x = np.random.default_rng(6).exponential(size=200)
    ours = bootstrap_ci(x, n_boot=20000, seed=0)
    theirs = stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", random_state=0)
    width = ours[1] - ours[0]
    ci = theirs.confidence_interval
    assert abs(ours[0] - ci.low) < 0.03 * width and abs(ours[1] - ci.high) < 0.03 * width


def test_ratio_ci_leaves_out_replicates_without_the_object():
    num = np.array([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    den = np.array([[2.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    low, high = ratio_ci(num, den, n_boot=400, seed=0)
    assert 0.5 <= low[0] <= high[0] <= 0.75 and np.isnan(low[1]) and np.isnan(high[1])


def _runs_matrix(rng: np.random.Generator, archs: int, seeds: int, effect: float) -> np.ndarray:
    """AR-like distances of archs x seeds runs: mean |v_a - v_b| of 50-d points, centres of SD `effect`."""
    centres = rng.normal(0, effect, (archs, 50))
    points = np.repeat(centres, seeds, axis=0) + rng.normal(0, 1, (archs * seeds, 50))
    return np.abs(points[:, None] - points[None]).mean(axis=2)


LABELS = [a for a in ("vgg11", "resnet18", "simple", "simpler") for _ in range(2)]


def test_relabel_test_enumerates_105_partitions_and_agrees_with_scipy():
    assert n_distinct_relabellings(LABELS) == 105
    assert n_distinct_relabellings(["a", "a", "a", "b", "b"]) == 10
    m = _runs_matrix(np.random.default_rng(0), 4, 2, 0.2)
    ours = relabel_test(m, LABELS)
    assert ours.n_relabellings == 105 and ours.exact and ours.n_within == 4 and ours.n_between == 24
    labels = np.array(LABELS)
    iu = np.triu_indices(8, 1)

    def statistic(order: np.ndarray, axis: int = -1) -> np.ndarray:
        lab = labels[np.asarray(order)]
        same = lab[..., iu[0]] == lab[..., iu[1]]
        return (m[iu] * ~same).sum(-1) / (~same).sum(-1) - (m[iu] * same).sum(-1) / same.sum(-1)

    # scipy relabels by all 8! orderings of the runs (each partition 4! x 2!^4 times): the same exact p
    theirs = stats.permutation_test(
        (np.arange(8),),
        statistic,
        permutation_type="pairings",
        alternative="greater",
        vectorized=True,
        n_resamples=np.inf,
    )
    assert ours.p_value == pytest.approx(theirs.pvalue) and ours.statistic == pytest.approx(theirs.statistic)
    sampled = relabel_test(m, LABELS, max_exact=0, n_random=20000, seed=1)
    assert not sampled.exact and sampled.n_relabellings == 20001
    assert abs(sampled.p_value - ours.p_value) < 0.015


def test_relabel_test_extremes_and_errors():
    paper = np.full((8, 8), 0.43)  # every cross-architecture pair further apart than every twin
    for k in range(4):
        paper[2 * k, 2 * k + 1] = paper[2 * k + 1, 2 * k] = 0.25
    np.fill_diagonal(paper, 0)
    assert relabel_test(paper, LABELS).p_value == pytest.approx(1 / 105)
    assert relabel_test(-paper, LABELS).p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two runs of one label"):
        relabel_test(paper[:4, :4], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="missing"):
        relabel_test(np.where(paper == 0.25, np.nan, paper), LABELS)


def test_holm():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.9]), [1.0, np.nan, 1.0])


def test_calibration_size_and_power_of_the_test_over_runs():
    """1000 simulated sweeps of 4 architectures x 2 seeds per setting; the test's size must be near 5%."""
    rng = np.random.default_rng(12)

    def rejection_rate(make_matrix) -> float:
        return float(np.mean([relabel_test(make_matrix(), LABELS).p_value <= 0.05 for _ in range(1000)]))

    def additive() -> np.ndarray:  # run effects u_a + u_b plus pair noise: still no architecture effect
        u = rng.normal(0, 1, 8)
        m = 0.3 + 0.05 * (u[:, None] + u[None]) + rng.normal(0, 0.01, (8, 8))
        return np.triu(m, 1) + np.triu(m, 1).T

    size_euclid = rejection_rate(lambda: _runs_matrix(rng, 4, 2, 0.0))
    size_additive = rejection_rate(additive)
    # planted: architecture centres with SD 0.3 / 0.5 per dimension against seed noise SD 1 (8% / 20% of the
    # variance between architectures)
    weak, strong = (rejection_rate(lambda e=e: _runs_matrix(rng, 4, 2, e)) for e in (0.3, 0.5))
    print(
        f"size (no effect): {size_euclid:.3f} distances, {size_additive:.3f} additive; "
        f"power: {weak:.3f} (SD 0.3), {strong:.3f} (SD 0.5)"
    )
    assert 0.03 <= size_euclid <= 0.07 and 0.03 <= size_additive <= 0.07
    assert size_euclid < weak < strong and strong > 0.5


def _profile(ratios: dict[str, dict[str, float]], t: float = 0.5) -> pd.DataFrame:
    rows = [(c, o, r) for c, objs in ratios.items() for o, r in objs.items()]
    return pd.DataFrame(
        {
            "threshold": t,
            "city": [r[0] for r in rows],
            "object": [r[1] for r in rows],
            "ratio": [r[2] for r in rows],
            "kept": True,
        }
    )


def test_ratio_profile_distance():
    a = _profile({"tokyo": {"sky": 0.6, "tree": 0.2}, "pitt": {"road": 0.5, "car": 0.1}})
    b = _profile({"tokyo": {"sky": 0.4, "tree": 0.4}, "pitt": {"road": 0.5, "car": 0.1, "fence": 0.4}})
    assert ratio_profile_distance(a, a) == 0.0
    # tokyo: (0.2 + 0.2) / 2 = 0.2; pitt: fence missing in a counts as 0 -> 0.4 / 3
    assert ratio_profile_distance(a, b) == pytest.approx((0.2 + 0.4 / 3) / 2)
    scaled = a.assign(ratio=a["ratio"] / 2)
    assert ratio_profile_distance(a, scaled, metric="js") == pytest.approx(0.0, abs=1e-12)
    assert 0 < ratio_profile_distance(a, b, metric="js") <= 1
    with pytest.raises(ValueError):
        ratio_profile_distance(a, b.assign(threshold=0.7))


def test_place_bootstrap_equals_image_bootstrap_when_every_image_is_its_place() -> None:
    x = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(x, 300, seed=2) == bootstrap_ci(
        x, 300, seed=2, groups=np.arange(50)[::-1].astype(str)
    )


def test_place_bootstrap_resamples_places() -> None:
    # 10 places, 20 identical views each: the place bootstrap sees 10 values, not 200 independent ones.
    values = np.repeat(np.random.default_rng(1).normal(size=10), 20)
    places = np.repeat(np.arange(10), 20)
    lo_img, hi_img = bootstrap_ci(values, 2000)
    lo_pl, hi_pl = bootstrap_ci(values, 2000, groups=places)
    lo_ten, hi_ten = bootstrap_ci(values[::20], 2000)
    assert hi_pl - lo_pl > 3 * (hi_img - lo_img)
    assert hi_pl - lo_pl == pytest.approx(hi_ten - lo_ten, rel=0.15)
    with pytest.raises(ValueError, match="one place per value"):
        bootstrap_ci(values, 10, groups=places[:5])
