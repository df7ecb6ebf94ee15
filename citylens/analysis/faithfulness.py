"""Faithfulness of an explanation: does the object-ratio ranking R_p^c (or the object attribution A_p^c of an
attribution explainer) follow what the network uses?

The truth is the causal table (causal.csv): per city and object, the mean drop of P(true city) when the object
is removed (`method` counterfactual on synthetic data, deletion on real data). Per city and method, over the
objects kept in the ratio table (at one threshold) that also have a causal effect:
- spearman: Spearman rank correlation of R and effect (scipy.stats.spearmanr, average ranks for ties);
- p_at_k: |top k by R & top k by effect| / k, k = number of objects planted in the city (synthetic data),
  else `default_k`, capped at the number of common objects.
With planted objects the table also scores both rankings against what the data holds (causal_planted_p_at_k,
explained_planted_p_at_k). `faithfulness_by_statistic` scores R and A_p^c of one variant in one table,
with a `statistic` column (`ratio`, `attribution`); `with_concepts` adds the rows of the concept step's
object ranking (statistic `concept`, docs/concepts.md). How to read them: docs/faithfulness.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

FAITHFULNESS_FILE = "faithfulness.csv"
# Its inputs: a variant's object ratios (the objects step) and the run's causal table (the causal step).
RATIOS_FILE = "object_ratios.csv"
CAUSAL_FILE = "causal.csv"
FAITHFULNESS_COLUMNS = [
    "city",
    "threshold",
    "method",
    "n_objects",
    "spearman",
    "spearman_p",
    "k",
    "p_at_k",
    "causal_top",
    "explained_top",
    "planted",
    "causal_planted_p_at_k",
    "explained_planted_p_at_k",
]
STATISTIC_COLUMNS = [*FAITHFULNESS_COLUMNS[:3], "statistic", *FAITHFULNESS_COLUMNS[3:]]
RATIO_COLUMNS = ("threshold", "city", "object", "ratio", "kept")
ATTRIBUTION_COLUMNS = ("city", "object", "attribution", "kept")
CAUSAL_COLUMNS = ("city", "object", "effect", "method")
# A per-object concept importance table (citylens.analysis.concepts.object_importance).
CONCEPT_COLUMNS = ("city", "object", "importance", "kept")
VALUE_COLUMNS = {"ratio": RATIO_COLUMNS, "attribution": ATTRIBUTION_COLUMNS, "importance": CONCEPT_COLUMNS}
SEPARATOR = "; "


def require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse a table that lacks a column the computation reads, naming the table and the columns."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; it has {list(table.columns)}")


def ranking(values: pd.Series) -> list[str]:
    """Object names by value, largest first, ties broken by name (the order planted_recovery uses)."""
    frame = pd.DataFrame({"object": values.index, "value": values.to_numpy(dtype=np.float64)})
    return frame.sort_values(["value", "object"], ascending=[False, True])["object"].tolist()


def precision_at_k(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """|first k of `ranked` & first k of `relevant`| / k; NaN for k = 0."""
    return len(set(ranked[:k]) & set(relevant[:k])) / k if k else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rho, two-sided p) of two equal-length vectors; NaN when fewer than 3 values or either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = stats.spearmanr(a, b)
    return float(result.statistic), float(result.pvalue)


def pick_threshold(ratios: pd.DataFrame, threshold: float | None, what: str = "object ratios") -> float:
    """The threshold block to read: the given one (it must be present), or the table's only one."""
    present = sorted(set(ratios["threshold"].astype(float)))
    if threshold is None:
        if len(present) != 1:
            raise ValueError(f"{what}: thresholds {present} present; pass threshold= to pick one")
        return present[0]
    if not np.isclose(present, threshold).any():
        raise ValueError(f"{what}: no rows at threshold {threshold} (present: {present})")
    return float(threshold)


def faithfulness(
    ratios: pd.DataFrame,
    causal: pd.DataFrame,
    threshold: float | None = None,
    planted: dict[str, Sequence[str]] | None = None,
    default_k: int = 3,
    names: tuple[str, str] = ("object ratios", "causal table"),
    value: str = "ratio",
) -> pd.DataFrame:
    """One row per (city, causal method) with a city in both tables; columns FAITHFULNESS_COLUMNS.

    `ratios` is an object-ratio table (object_ratios.csv), `causal` a causal table (causal.csv); `names`
    label them in error messages (e.g. their paths). causal_top / explained_top list the first k objects of
    each ranking joined by '; ', planted the city's planted objects (empty on real data). With
    value="attribution", `ratios` is an object-attribution table (object_attribution.csv) instead: its kept
    objects are ranked by A_p^c, and the threshold column is NaN; with value="importance" it is a per-object
    concept importance table (CONCEPT_COLUMNS), ranked by importance, threshold NaN.
    """
    if value not in VALUE_COLUMNS:
        raise ValueError(f"value: {value!r} is not one of {list(VALUE_COLUMNS)}")
    require_columns(ratios, VALUE_COLUMNS[value], names[0])
    require_columns(causal, CAUSAL_COLUMNS, names[1])
    if default_k < 1:
        raise ValueError(f"default_k must be >= 1, got {default_k}")
    planted = {city: list(dict.fromkeys(objs)) for city, objs in (planted or {}).items()}
    rows = []
    if value != "ratio":
        threshold = float("nan")
        at = ratios[ratios["kept"].astype(bool)]
    elif len(ratios):
        threshold = pick_threshold(ratios, threshold, names[0])
        at = ratios[np.isclose(ratios["threshold"].astype(float), threshold) & ratios["kept"].astype(bool)]
    else:
        at = ratios
    effects = causal[np.isfinite(causal["effect"].astype(float))]
    for (city, method), group in effects.groupby(["city", "method"], sort=True):
        explained = at[at["city"] == city].set_index("object")[value]
        if explained.empty:
            continue
        effect = group.groupby("object")["effect"].mean()
        common = sorted(set(explained.index) & set(effect.index))
        r, e = explained.reindex(common), effect.reindex(common)
        names_planted = planted.get(city, [])
        k = min(len(names_planted) or default_k, len(common))
        by_r, by_e = ranking(r), ranking(e)
        rho, p = spearman(r.to_numpy(), e.to_numpy())
        rows.append(
            {
                "city": city,
                "threshold": threshold,
                "method": method,
                "n_objects": len(common),
                "spearman": rho,
                "spearman_p": p,
                "k": k,
                "p_at_k": precision_at_k(by_r, by_e, k),
                "causal_top": SEPARATOR.join(by_e[:k]),
                "explained_top": SEPARATOR.join(by_r[:k]),
                "planted": SEPARATOR.join(names_planted),
                "causal_planted_p_at_k": _planted_hits(by_e, names_planted, k),
                "explained_planted_p_at_k": _planted_hits(by_r, names_planted, k),
            }
        )
    return pd.DataFrame(rows, columns=FAITHFULNESS_COLUMNS)


def faithfulness_by_statistic(
    ratios: pd.DataFrame,
    attribution: pd.DataFrame,
    causal: pd.DataFrame,
    threshold: float | None = None,
    planted: dict[str, Sequence[str]] | None = None,
    default_k: int = 3,
    names: tuple[str, str, str] = ("object ratios", "object attribution", "causal table"),
) -> pd.DataFrame:
    """`faithfulness` of R (statistic `ratio`) and of A_p^c (statistic `attribution`) against the same causal
    table, stacked; columns STATISTIC_COLUMNS."""
    parts = [
        faithfulness(table, causal, threshold, planted, default_k, (name, names[2]), value).assign(
            statistic=value
        )
        for table, name, value in ((ratios, names[0], "ratio"), (attribution, names[1], "attribution"))
    ]
    return pd.concat(parts, ignore_index=True)[STATISTIC_COLUMNS]


def with_concepts(
    table: pd.DataFrame,
    objects: pd.DataFrame,
    causal: pd.DataFrame,
    planted: dict[str, Sequence[str]] | None = None,
    default_k: int = 3,
    names: tuple[str, str] = ("concept importance", "causal table"),
) -> pd.DataFrame:
    """A faithfulness table (with or without a `statistic` column; without one its rows are `ratio`) and the
    rows of `faithfulness` on a per-object concept importance table (statistic `concept`), stacked; columns
    STATISTIC_COLUMNS. The concept rows are scored exactly as R's: same k, same common objects rule."""
    mine = faithfulness(objects, causal, None, planted, default_k, names, "importance").assign(
        statistic="concept"
    )
    first = table if "statistic" in table.columns else table.assign(statistic="ratio")
    parts = [p for p in (first, mine) if len(p)]
    return pd.concat(parts, ignore_index=True)[STATISTIC_COLUMNS] if parts else mine[STATISTIC_COLUMNS]


def _planted_hits(ranked: list[str], planted: list[str], k: int) -> float:
    """Share of the first k of a ranking that are planted objects (NaN without planted objects or k = 0)."""
    return len(set(ranked[:k]) & set(planted)) / k if planted and k else float("nan")
