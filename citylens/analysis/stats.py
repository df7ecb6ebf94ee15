"""Uncertainty and significance for the analysis (docs/statistics.md).

- `bootstrap_ci`: percentile bootstrap interval of a mean, resampling test places (clusters of views) with all
  their images; `ratio_ci` the same for a ratio of sums such as R_p^c.
- `relabel_test`: "architectures differ more than seeds", an exact test that relabels the runs (not the pairs)
  and recomputes the statistic from the run x run matrix; `holm` adjusts the secondary tests.
- `ratio_profile_distance`: L1 or Jensen-Shannon divergence between two runs' object-ratio profiles.

The intervals hold the trained networks fixed: they say how much the numbers move with other test places, not
with another training run (the spread across seeds says that).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb, factorial, prod

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

_BLOCK_ELEMENTS = 1 << 21


def _check_level(level: float, n_boot: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")


def group_index(groups: Sequence | np.ndarray, n: int) -> np.ndarray:
    """Place labels (any hashable values, one per image) -> integer codes 0..G-1 in order of appearance."""
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"groups must give one place per value: {np.shape(groups)} for {n} values")
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[codes]


def ratio_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of sum(num) / sum(den) over G resampling units, with replacement, per row.

    numerators, denominators: (P, G) per-unit sums (a (G,) denominator serves every row). Every replicate
    draws ONE multiset of units for all rows, as resampling counts n_boot x G, in blocks that bound memory.
    Replicates with a zero denominator (e.g. an object absent from every drawn place) are left out; a row
    with none left gets NaN.
    """
    num = np.atleast_2d(np.asarray(numerators, dtype=np.float64))
    den = np.asarray(denominators, dtype=np.float64)
    den = np.broadcast_to(den, num.shape) if den.ndim == 1 else den
    if den.shape != num.shape or num.shape[1] == 0:
        raise ValueError(f"need (P, G) numerators and denominators with G >= 1: {num.shape}, {den.shape}")
    _check_level(level, n_boot)
    g = num.shape[1]
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // g)
    ratios = np.empty((num.shape[0], n_boot))
    for s in range(0, n_boot, block):
        b = min(block, n_boot - s)
        idx = rng.integers(0, g, size=(b, g)) + (np.arange(b) * g)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * g).reshape(b, g).T
        top, bottom = num @ counts, den @ counts
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios[:, s : s + b] = np.where(bottom > 0, top / bottom, np.nan)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    empty = np.isnan(ratios).all(axis=1)
    low, high = np.full(len(num), np.nan), np.full(len(num), np.nan)
    if (~empty).any():
        low[~empty], high[~empty] = np.nanquantile(ratios[~empty], quantiles, axis=1)
    return low, high


def bootstrap_ci(
    per_image_values: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence | np.ndarray | None = None,
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over images, resampling places with every view of a place.

    `groups`: each image's place (panorama id, the image itself on synthetic data); None = every image its own
    place. A replicate draws places with replacement and takes the mean over all images of the drawn places,
    so near-duplicate views of one panorama never count as independent evidence. A 1-D input (N,) gives
    (low, high) floats; a 2-D input (P, N), e.g. the per-image residuals of P run pairs over the same images,
    gives (low, high) arrays of shape (P,) where every replicate draws the SAME places for all rows.
    """
    x = np.asarray(per_image_values, dtype=np.float64)
    one_d = x.ndim == 1
    x = x[None] if one_d else x
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"need (N,) or (P, N) values with N >= 1, got shape {np.shape(per_image_values)}")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    n = x.shape[1]
    if groups is None:
        sums, sizes = x, np.ones(n)
    else:
        codes = group_index(groups, n)
        n_groups = int(codes.max()) + 1
        sums = np.zeros((x.shape[0], n_groups))
        np.add.at(sums.T, codes, x.T)
        sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    low, high = ratio_ci(sums, sizes, n_boot, level, seed)
    return (float(low[0]), float(high[0])) if one_d else (low, high)


@dataclass(frozen=True)
class RelabelResult:
    """The outcome of `relabel_test`: the observed statistic, its parts, and p over n_relabellings."""

    statistic: float
    between_mean: float
    within_mean: float
    n_between: int
    n_within: int
    p_value: float
    n_relabellings: int
    exact: bool


def n_distinct_relabellings(labels: Sequence) -> int:
    """Distinct partitions of the runs into label groups of the observed sizes (label names do not matter).

    4 architectures x 2 seeds: 8! / (2!^4 4!) = 105.
    """
    sizes = Counter(Counter(labels).values())
    blocks = prod(factorial(s) ** m * factorial(m) for s, m in sizes.items())
    return factorial(len(labels)) // blocks


def _partitions(n: int, sizes: Counter) -> Iterator[list[int]]:
    """Every partition of 0..n-1 into blocks of the given sizes, once each, as a block id per run.

    The block holding the smallest unassigned run is chosen next (its size, then its other members), which
    fixes an order on unordered blocks of equal size.
    """
    assign = [-1] * n

    def rec(remaining: list[int], block: int) -> Iterator[list[int]]:
        if not remaining:
            yield list(assign)
            return
        first, rest = remaining[0], remaining[1:]
        for size in sorted(s for s, m in sizes.items() if m > 0):
            sizes[size] -= 1
            for others in combinations(rest, size - 1):
                for k in (first, *others):
                    assign[k] = block
                chosen = set(others)
                yield from rec([k for k in rest if k not in chosen], block + 1)
            sizes[size] += 1

    yield from rec(list(range(n)), 0)


def _relabel_stats(values: np.ndarray, iu: tuple[np.ndarray, np.ndarray], assign: np.ndarray) -> np.ndarray:
    """(mean over cross-label pairs) - (mean over same-label pairs) for every row of block ids (K, R)."""
    same = assign[:, iu[0]] == assign[:, iu[1]]
    n_same = same.sum(axis=1)
    within = (same * values).sum(axis=1) / n_same
    between = (~same * values).sum(axis=1) / (same.shape[1] - n_same)
    return between - within


def relabel_test(
    matrix: np.ndarray, labels: Sequence, max_exact: int = 10000, n_random: int = 10000, seed: int = 0
) -> RelabelResult:
    """One-sided test of "runs of different labels (architectures) differ more than runs of one label".

    matrix: (R, R) symmetric distances between runs (e.g. AR); labels: each run's architecture. The statistic
    is the mean over cross-architecture pairs minus the mean over same-architecture pairs. Under the null the
    runs are exchangeable, so the architecture labels are relabelled across the runs: every distinct
    relabelling (a partition of the runs into groups of the observed sizes) when there are at most
    `max_exact`, else `n_random` seeded random ones plus the observed. p = share of relabellings with a
    statistic at least the observed one, the observed included (never 0).
    """
    m = np.asarray(matrix, dtype=np.float64)
    r = len(labels)
    if m.shape != (r, r):
        raise ValueError(f"matrix is {m.shape} for {r} run labels")
    iu = np.triu_indices(r, 1)
    values = m[iu]
    if not np.isfinite(values).all():
        raise ValueError("the run x run matrix has missing (non-finite) pairs")
    if not np.allclose(m[iu], m.T[iu]):
        raise ValueError("the run x run matrix must be symmetric")
    codes = group_index(list(labels), r)
    sizes = Counter(Counter(codes.tolist()).values())
    n_within = sum(m_s * comb(s, 2) for s, m_s in sizes.items())
    n_between = comb(r, 2) - n_within
    if n_within == 0 or n_between == 0:
        raise ValueError(f"need two runs of one label and two labels, got {list(labels)}")
    observed_same = codes[iu[0]] == codes[iu[1]]
    between, within = values[~observed_same].mean(), values[observed_same].mean()
    observed = between - within
    tol = 1e-12 * max(1.0, float(np.abs(values).max()))
    total = n_distinct_relabellings(codes.tolist())
    if total <= max_exact:
        assign = np.array(list(_partitions(r, Counter(sizes))), dtype=np.int64)
        stats = _relabel_stats(values, iu, assign)
        p, n, exact = float(np.mean(stats >= observed - tol)), len(assign), True
    else:
        rng = np.random.default_rng(seed)
        assign = rng.permuted(np.broadcast_to(codes, (n_random, r)), axis=1)
        hits = int(np.sum(_relabel_stats(values, iu, assign) >= observed - tol))
        p, n, exact = (1 + hits) / (1 + n_random), n_random + 1, False
    return RelabelResult(float(observed), float(between), float(within), n_between, n_within, p, n, exact)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error); NaN entries stay NaN, outside the family."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    k = len(order)
    adjusted = np.maximum.accumulate((k - np.arange(k)) * p[order]) if k else np.array([])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _ratio_vectors(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    objects = sorted(set(a.loc[a["kept"], "object"]) | set(b.loc[b["kept"], "object"]))
    ra = a.set_index("object")["ratio"].reindex(objects).fillna(0.0).to_numpy(dtype=np.float64)
    rb = b.set_index("object")["ratio"].reindex(objects).fillna(0.0).to_numpy(dtype=np.float64)
    return ra, rb


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (scipy's distance squared) of two vectors normalised to sum 1.

    In [0, 1]; two all-zero vectors are 0 apart, an all-zero and a non-zero one 1.
    """
    if p.sum() == 0 or q.sum() == 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    return float(jensenshannon(p, q, base=2) ** 2)


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
        out.append(float(np.abs(ra - rb).mean()) if metric == "l1" else js_divergence(ra, rb))
    if not out:
        raise ValueError("no kept objects in any common city")
    return float(np.mean(out))
