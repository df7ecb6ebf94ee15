"""The sweep report's tables: Table 2 (AR per pair, grouped as in the paper, with intervals over test places
and the spread across seeds), the object-ratio profile distances, the tests over run relabellings, the
spread of R across seeds, the planted-object recovery and the t-SNE purity. Each works on the runs of one
data group (docs/statistics.md).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from citylens.analysis.residuals import PairwiseResiduals
from citylens.analysis.stats import bootstrap_ci, holm, ratio_profile_distance, relabel_test
from citylens.pipeline.runs import Run, pair_group, stream_residuals

# Table 2 of the paper (docs/paper.md): AR between architectures, and between an architecture and its
# retrained twin.
PAPER_AR = {
    ("vgg11", "resnet18"): 0.4349,
    ("vgg11", "simple"): 0.4303,
    ("vgg11", "simpler"): 0.4502,
    ("resnet18", "simple"): 0.4118,
    ("resnet18", "simpler"): 0.4136,
    ("simple", "simpler"): 0.3149,
    ("vgg11", "vgg11"): 0.2679,
    ("resnet18", "resnet18"): 0.2265,
    ("simple", "simple"): 0.2411,
    ("simpler", "simpler"): 0.2460,
}
PAIR_COLUMNS = [
    "group",
    "run_a",
    "run_b",
    "label_a",
    "label_b",
    "arch_a",
    "arch_b",
    "seed_a",
    "seed_b",
    "ar",
    "ci_low",
    "ci_high",
    "n_images",
]
GROUPED_COLUMNS = [
    "group",
    "arch_a",
    "arch_b",
    "pair",
    "n_pairs",
    "ar",
    "ci_low",
    "ci_high",
    "seed_sd",
    "paper_ar",
]
TEST_COLUMNS = [
    "comparison",
    "test",
    "between_mean",
    "within_mean",
    "n_between",
    "n_within",
    "n_relabellings",
    "p_value",
    "p_adjusted",
    "primary",
]
MAX_EXACT = 10000
IMPORTANCE_COMPARISON = "object-importance ranking distance (1 - Spearman rho)"
CONCEPT_COMPARISON = "concept distance (1 - matched correlation of per-image strength)"


def paper_ar(arch_a: str, arch_b: str) -> float:
    """The paper's Table 2 value for an architecture pair (NaN when the paper has none)."""
    return PAPER_AR.get((arch_a, arch_b), PAPER_AR.get((arch_b, arch_a), float("nan")))


def _pair_identity(a: Run, b: Run) -> dict:
    """The columns that name a pair of runs and its group (architecture pair or seed pair)."""
    return {
        "group": pair_group(a.arch, b.arch),
        "run_a": a.name,
        "run_b": b.name,
        "label_a": a.label,
        "label_b": b.label,
    }


def _pair_rows(runs: Sequence[Run], pairs: PairwiseResiduals) -> pd.DataFrame:
    by_name = {r.name: r for r in runs}
    rows = []
    for name_a, name_b in pairs.pairs:
        a, b = by_name[name_a], by_name[name_b]
        rows.append(
            {
                **_pair_identity(a, b),
                "arch_a": a.arch,
                "arch_b": b.arch,
                "seed_a": a.seed,
                "seed_b": b.seed,
                "n_images": pairs.n_images,
            }
        )
    return pd.DataFrame(rows)


def _group_key(row: pd.Series, arch_rank: dict[str, int]) -> tuple[str, str, str]:
    a, b = sorted((row["arch_a"], row["arch_b"]), key=lambda x: arch_rank[x])
    return row["group"], a, b


def table2(
    runs: Sequence[Run], pairs: PairwiseResiduals | None, n_boot: int = 1000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 2 per pair of runs and grouped as in the paper, each AR with a 95% interval over test places.

    Grouped rows average a group's per-image residuals over its seed combinations (architecture pairs) or its
    seed pairs (one architecture retrained); seed_sd is the standard deviation of the group's per-pair ARs
    (the variation another training run would show; NaN for a single pair). No pairs (fewer than two runs)
    give empty tables. Every interval comes from ONE bootstrap over the test places (the first run's store
    records them; all runs cover the same images), so all pairs and groups are resampled alike.
    """
    if pairs is None or pairs.n_images == 0:
        return pd.DataFrame(columns=PAIR_COLUMNS), pd.DataFrame(columns=GROUPED_COLUMNS)
    matrix = pairs.matrix()
    per_pair = _pair_rows(runs, pairs)
    arch_rank = {}
    for run in runs:
        arch_rank.setdefault(run.arch, len(arch_rank))
    keys = [_group_key(row, arch_rank) for _, row in per_pair.iterrows()]
    order = sorted(set(keys), key=lambda k: (k[0] != "architecture", arch_rank[k[1]], arch_rank[k[2]]))
    members = [[i for i, k in enumerate(keys) if k == key] for key in order]
    grouped_values = np.stack([matrix[idx].mean(axis=0) for idx in members])
    low, high = bootstrap_ci(
        np.vstack([matrix, grouped_values]), n_boot=n_boot, seed=seed, groups=runs[0].store.places
    )
    pair_ar = matrix.mean(axis=1)
    per_pair = per_pair.assign(ar=pair_ar, ci_low=low[: len(matrix)], ci_high=high[: len(matrix)])
    grouped = pd.DataFrame(
        {
            "group": [k[0] for k in order],
            "arch_a": [k[1] for k in order],
            "arch_b": [k[2] for k in order],
            "pair": [f"{a} vs {b}" if g == "architecture" else f"{a} vs {a} retrained" for g, a, b in order],
            "n_pairs": [len(idx) for idx in members],
            "ar": grouped_values.mean(axis=1),
            "ci_low": low[len(matrix) :],
            "ci_high": high[len(matrix) :],
            "seed_sd": [pair_ar[idx].std(ddof=1) if len(idx) > 1 else np.nan for idx in members],
            "paper_ar": [paper_ar(a, b) for _, a, b in order],
        }
    )
    return per_pair[PAIR_COLUMNS], grouped[GROUPED_COLUMNS]


def ratio_distances(runs: Sequence[Run], threshold: float) -> pd.DataFrame:
    """Distance between the object-ratio profiles (Figure 5 bars) of every pair of runs that has them."""
    with_ratios = [r for r in runs if r.table("object_ratios.csv") is not None]
    rows = []
    for a, b in combinations(with_ratios, 2):
        ta, tb = a.table("object_ratios.csv"), b.table("object_ratios.csv")
        try:
            l1 = ratio_profile_distance(ta, tb, threshold=threshold, metric="l1")
            js = ratio_profile_distance(ta, tb, threshold=threshold, metric="js")
        except ValueError:
            continue
        rows.append(
            {
                **_pair_identity(a, b),
                "l1": l1,
                "js": js,
            }
        )
    return pd.DataFrame(rows, columns=["group", "run_a", "run_b", "label_a", "label_b", "l1", "js"])


SPREAD_COLUMNS = ["data_group", "arch", "city", "object", "n_runs", "mean", "seed_sd", "low", "high"]


def ratio_spread(groups: Sequence[Sequence[Run]], threshold: float) -> pd.DataFrame:
    """The spread of R_p^c across seeds: per data group, architecture, city and kept object, the number of
    runs, the mean R, its SD across those runs (NaN with one run) and its range, at one threshold."""
    rows = []
    for k, runs in enumerate(groups, 1):
        for run in runs:
            table = run.table("object_ratios.csv")
            if table is None:
                continue
            kept = table[np.isclose(table["threshold"], threshold) & table["kept"].astype(bool)]
            rows.append(kept[["city", "object", "ratio"]].assign(data_group=k, arch=run.arch))
    if not rows:
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    ratios = pd.concat(rows, ignore_index=True).groupby(["data_group", "arch", "city", "object"], sort=False)
    spread = ratios["ratio"].agg(n_runs="count", mean="mean", seed_sd="std", low="min", high="max")
    return spread.reset_index()[SPREAD_COLUMNS]


def run_matrix(runs: Sequence[Run], table: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    """The run x run matrix of a pair table's `column` (run_a, run_b), over the runs that appear in it.

    Returns the matrix (NaN where a pair is missing, 0 on the diagonal) and those runs' architectures.
    """
    names = set(table["run_a"]) | set(table["run_b"])
    present = [r for r in runs if r.name in names]
    index = {r.name: i for i, r in enumerate(present)}
    m = np.full((len(present), len(present)), np.nan)
    np.fill_diagonal(m, 0.0)
    for a, b, v in zip(table["run_a"], table["run_b"], table[column]):
        m[index[a], index[b]] = m[index[b], index[a]] = float(v)
    return m, [r.arch for r in present]


def _test_row(
    comparison: str, runs: Sequence[Run], table: pd.DataFrame, column: str, n_random: int, seed: int
) -> dict:
    """One relabelling test: NaN p where there is no seed pair, one architecture, or a missing pair."""
    between = table.loc[table["group"] == "architecture", column].to_numpy(dtype=np.float64)
    within = table.loc[table["group"] == "seed", column].to_numpy(dtype=np.float64)
    row = {
        "comparison": comparison,
        "test": "runs relabelled",
        "between_mean": between.mean() if len(between) else float("nan"),
        "within_mean": within.mean() if len(within) else float("nan"),
        "n_between": len(between),
        "n_within": len(within),
        "n_relabellings": 0,
        "p_value": float("nan"),
    }
    if len(between) and len(within):
        matrix, labels = run_matrix(runs, table, column)
        if np.isfinite(matrix).all():
            result = relabel_test(matrix, labels, MAX_EXACT, n_random, seed)
            row["test"] = "runs relabelled, " + ("every relabelling" if result.exact else "random sample")
            row["n_relabellings"], row["p_value"] = result.n_relabellings, result.p_value
    return row


def comparison_tests(
    runs: Sequence[Run],
    per_pair: pd.DataFrame,
    distances: pd.DataFrame,
    n_perm: int = 10000,
    seed: int = 0,
    agreement: pd.DataFrame | None = None,
    concepts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tests of "architectures differ more than seeds" for AR (primary), the ratio profiles (L1, JS) and, when
    `agreement` has pairs (report.headline.importance_agreement), the object-importance rankings (1 - rho),
    and when `concepts` has pairs (report.concepts.concept_agreement), the matched concepts (1 - agreement).

    Each relabels the architecture labels across the runs (`relabel_test`: every distinct relabelling up to
    MAX_EXACT, else n_perm random ones) and recomputes mean cross-architecture minus mean same-architecture
    distance from the run x run matrix. AR is the primary test (p_adjusted = p_value); the secondary ones
    get Holm-adjusted p-values. NaN p where a test cannot be made (no seed pairs, one architecture).
    """
    rows = [
        _test_row("average residual AR", runs, per_pair, "ar", n_perm, seed),
        _test_row("object-ratio profile distance (L1)", runs, distances, "l1", n_perm, seed),
        _test_row("object-ratio profile distance (JS)", runs, distances, "js", n_perm, seed),
    ]
    if agreement is not None and len(agreement):
        rows.append(_test_row(IMPORTANCE_COMPARISON, runs, agreement, "distance", n_perm, seed))
    if concepts is not None and len(concepts):
        rows.append(_test_row(CONCEPT_COMPARISON, runs, concepts, "distance", n_perm, seed))
    table = pd.DataFrame(rows).assign(primary=[True] + [False] * (len(rows) - 1))
    table["p_adjusted"] = np.r_[table["p_value"].iloc[:1], holm(table["p_value"].iloc[1:])]
    return table[TEST_COLUMNS]


def _ranked(names: list[str], ranks: object) -> str:
    """'fence #3, signboard #12': each planted object's rank in the ratio ranking ('not kept' if none).

    `ranks` is recovery.csv's planted_ranks cell, "(3, None)"; a missing cell (None, NaN) or text that is no
    Python literal shows as a dash, as missing values do in the report's tables."""
    if ranks is None or (isinstance(ranks, float) and not np.isfinite(ranks)):
        return "–"
    try:
        values = ast.literal_eval(ranks) if isinstance(ranks, str) else ranks
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "–"
    if not isinstance(values, list | tuple) or len(values) != len(names):
        return str(ranks)
    return ", ".join(f"{n} #{r}" if r is not None else f"{n} not kept" for n, r in zip(names, values))


def recovery_table(runs: Sequence[Run], threshold: float) -> pd.DataFrame:
    """Planted-object recovery per run and city at the main threshold (synthetic data; empty otherwise)."""
    columns = ["run", "label", "city", "k", "n_kept", "precision_at_k", "separated", "planted_ranks", "ranks"]
    rows = []
    for run in runs:
        table = run.table("recovery.csv")
        if table is None or not run.planted:
            continue
        at = table[np.isclose(table["threshold"], threshold)]
        ranks = [_ranked(run.planted.get(c, []), r) for c, r in zip(at["city"], at["planted_ranks"])]
        rows.append(at.assign(run=run.name, label=run.label, ranks=ranks))
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def tsne_purity(tsne: pd.DataFrame, k: int = 5) -> float:
    """Share of images whose k nearest neighbours in the t-SNE map are mostly of their city (NaN if none)."""
    points = tsne[["x", "y"]].to_numpy(dtype=np.float64)
    ok = np.isfinite(points).all(axis=1)
    points, cities = points[ok], tsne["city"].to_numpy()[ok]
    if len(points) <= k:
        return float("nan")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    same = (cities[idx[:, 1:]] == cities[:, None]).mean(axis=1)
    return float((same > 0.5).mean())


def variant_table(variant_runs: dict[str, Sequence[Sequence[Run]]], chunk: int = 128) -> pd.DataFrame:
    """One row per (data group, architecture, variant): planted-object P@k (mean over runs and cities), AR
    between seeds (mean over the pairs of runs of that architecture, same variant and data) and t-SNE purity
    (mean over runs)."""
    columns = ["data_group", "arch", "variant", "explainer", "layer", "target", "images", "threshold"]
    columns += ["n_runs", "planted_p_at_k", "ar_seeds", "tsne_purity"]
    rows = []
    for variant, groups in variant_runs.items():
        for k, runs in enumerate(groups, 1):
            for arch in dict.fromkeys(r.arch for r in runs):
                rows.append(
                    {
                        "data_group": k,
                        "variant": variant,
                        **_variant_row([r for r in runs if r.arch == arch], chunk),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def _variant_row(group: Sequence[Run], chunk: int) -> dict:
    """The variant-table values of the runs of one architecture."""
    settings = group[0].settings
    recovery = recovery_table(group, settings.threshold)
    purities = [tsne_purity(t) for t in (r.table("tsne.csv") for r in group) if t is not None]
    ar = float("nan")
    if len(group) > 1:
        pairs = stream_residuals([r.store for r in group], [r.name for r in group], chunk)
        ar = float(np.mean(list(pairs.average().values())))
    return {
        "arch": group[0].arch,
        "explainer": settings.explainer,
        "layer": settings.layer,
        "target": settings.target,
        "images": settings.images,
        "threshold": settings.threshold,
        "n_runs": len(group),
        "planted_p_at_k": float(recovery["precision_at_k"].mean()) if len(recovery) else np.nan,
        "ar_seeds": ar,
        "tsne_purity": float(np.nanmean(purities)) if purities else np.nan,
    }


def misclassified_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Per run and true city: test images and how many of them the run misclassified."""
    rows = []
    for run in runs:
        cities = np.asarray(run.store.cities)
        wrong = run.store.preds != run.store.targets
        for city in dict.fromkeys(run.store.cities):
            here = cities == city
            rows.append(
                {
                    "run": run.name,
                    "label": run.label,
                    "city": city,
                    "n_images": int(here.sum()),
                    "misclassified": int((wrong & here).sum()),
                }
            )
    return pd.DataFrame(rows, columns=["run", "label", "city", "n_images", "misclassified"])
