"""Bootstrap intervals, the permutation test and the ratio-profile distance."""

import numpy as np
import pandas as pd
import pytest

from citylens.analysis.stats import bootstrap_ci, permutation_test, ratio_profile_distance


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


def test_permutation_test():
    between = [0.4349, 0.4303, 0.4502, 0.4118, 0.4136, 0.3149]  # paper Table 2, architecture pairs
    within = [0.2679, 0.2265, 0.2411, 0.2460]  # retrained twins
    # every between value beats every within one: the observed split is the most extreme of C(10,6) = 210
    assert permutation_test(between, within) == pytest.approx(1 / 210)
    p_mc = permutation_test(between, within, n_perm=100, seed=0)
    assert 1 / 101 <= p_mc < 0.05  # Monte Carlo path: never 0
    assert permutation_test(within, between) == pytest.approx(1.0)
    same = [0.3, 0.4, 0.5]
    assert permutation_test(same, same) > 0.4
    rng = np.random.default_rng(1)
    assert permutation_test(rng.random(30), rng.random(30), n_perm=2000) > 0.05


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
