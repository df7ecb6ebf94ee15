"""Uncertainty and significance for the analysis: bootstrap intervals over test images, a permutation test for
"architectures differ more than retrained twins", and a distance between two runs' object-ratio profiles.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np
import pandas as pd

_BLOCK_ELEMENTS = 1 << 21


def bootstrap_ci(
    per_image_values: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean, resampling images (or their places) with replacement.

    A 1-D input (N,) gives (low, high) floats. A 2-D input (P, N), e.g. the per-image residuals of P run pairs
    over the same images, gives (low, high) arrays of shape (P,) where every replicate resamples the SAME
    image indices for all rows, so the intervals respect that the pairs share images. Replicates are drawn as
    resampling counts, n_boot x N, in blocks that keep memory bounded.

    `groups` (N,): the place of each image (design.md: the unit of independence). Each replicate then draws
    places with replacement and takes the mean over all images of the drawn places; when every image is its
    own place this is exactly the image bootstrap (same draws, same interval).
    """
    x = np.asarray(per_image_values, dtype=np.float64)
    one_d = x.ndim == 1
    x = x[None] if one_d else x
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"need (N,) or (P, N) values with N >= 1, got shape {np.shape(per_image_values)}")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    sizes = np.ones(x.shape[1])
    if groups is not None:
        labels = np.asarray(groups)
        if labels.shape != (x.shape[1],):
            raise ValueError(f"groups must give one place per value: {labels.shape} for {x.shape[1]} values")
        _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        group = np.argsort(np.argsort(first))[inverse]  # places numbered by first appearance
        sums = np.zeros((x.shape[0], len(first)))
        np.add.at(sums.T, group, x.T)
        x, sizes = sums, np.bincount(group).astype(np.float64)
    n = x.shape[1]
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty((x.shape[0], n_boot))
    for s in range(0, n_boot, block):
        b = min(block, n_boot - s)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        means[:, s : s + b] = x @ counts.T / (counts @ sizes)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return (float(low[0]), float(high[0])) if one_d else (low, high)


def permutation_test(between: np.ndarray, within: np.ndarray, n_perm: int = 10000, seed: int = 0) -> float:
    """One-sided p-value for mean(between) > mean(within), e.g. AR of architecture pairs vs retrained pairs.

    The statistic is mean(between) - mean(within) over the pooled values relabelled at random. When the number
    of relabellings C(n_b + n_w, n_b) is at most n_perm they are all enumerated and p is exact (the observed
    labelling counts, so p >= 1/C); otherwise p = (1 + #{stat >= observed}) / (1 + n_perm) over n_perm random
    relabellings (never 0).
    """
    b = np.asarray(between, dtype=np.float64).ravel()
    w = np.asarray(within, dtype=np.float64).ravel()
    if len(b) == 0 or len(w) == 0:
        raise ValueError("both groups need at least one value")
    pooled = np.concatenate([b, w])
    n, k = len(pooled), len(b)
    total = pooled.sum()
    observed = b.mean() - w.mean()
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    if comb(n, k) <= n_perm:
        picks = np.array(list(combinations(range(n), k)), dtype=np.int64)
        sums = pooled[picks].sum(axis=1)
        stats = sums / k - (total - sums) / (n - k)
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    hits = 0
    for s in range(0, n_perm, block):
        keys = rng.random((min(block, n_perm - s), n))
        sums = pooled[np.argsort(keys, axis=1)[:, :k]].sum(axis=1)
        hits += int(np.sum(sums / k - (total - sums) / (n - k) >= observed - tol))
    return float((1 + hits) / (1 + n_perm))


def _ratio_vectors(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    objects = sorted(set(a.loc[a["kept"], "object"]) | set(b.loc[b["kept"], "object"]))
    ra = a.set_index("object")["ratio"].reindex(objects).fillna(0.0).to_numpy(dtype=np.float64)
    rb = b.set_index("object")["ratio"].reindex(objects).fillna(0.0).to_numpy(dtype=np.float64)
    return ra, rb


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits of two non-negative vectors, each normalised to sum 1 (in [0, 1])."""
    if p.sum() == 0 or q.sum() == 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def ratio_profile_distance(
    table_a: pd.DataFrame, table_b: pd.DataFrame, threshold: float | None = None, metric: str = "l1"
) -> float:
    """Distance between two runs' object-ratio histograms (Figure 5 bars), averaged over their common cities.

    Per city, both runs' ratios are compared over the union of the objects either keeps (an object missing
    from a table counts as ratio 0). metric="l1": mean |R_a - R_b| over those objects, in [0, 1], read as "how
    far apart, on average, each object's ratio is" (it sees both the shape and the overall level of the
    histogram). metric="js": Jensen-Shannon divergence (bits, in [0, 1]) of the ratio vectors normalised to
    sum 1, which sees only the shape, i.e. which objects a run favours relative to the others, not how much of
    everything its explanations cover. `threshold` picks one block of multi-threshold tables; it may be left
    out when the tables share exactly one threshold.
    """
    if metric not in ("l1", "js"):
        raise ValueError(f"metric must be 'l1' or 'js', got {metric!r}")
    if threshold is None:
        common = set(table_a["threshold"]) & set(table_b["threshold"])
        if len(common) != 1:
            raise ValueError(f"tables share thresholds {sorted(common)}: pass threshold= to pick one")
        threshold = common.pop()
    a = table_a[np.isclose(table_a["threshold"], threshold)]
    b = table_b[np.isclose(table_b["threshold"], threshold)]
    cities = sorted(set(a["city"]) & set(b["city"]))
    if not cities:
        raise ValueError(f"no city with rows in both tables at threshold {threshold}")
    out = []
    for city in cities:
        ra, rb = _ratio_vectors(a[a["city"] == city], b[b["city"] == city])
        if len(ra) == 0:
            continue
        out.append(float(np.abs(ra - rb).mean()) if metric == "l1" else _js(ra, rb))
    if not out:
        raise ValueError("no kept objects in any common city")
    return float(np.mean(out))
