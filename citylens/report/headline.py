"""The sweep report's opening answer: which objects make each city recognisable to each architecture.

The objects are ranked by the (variant, statistic) whose rankings agree best with the causal effects in the
runs' faithfulness.csv (mean Spearman rho over run-city cases; counterfactual effects on synthetic data,
deletion on real data), the concept step's object ranking among them (statistic `concept`, read from the
run's concepts.csv: the same for every variant). The paper's object ratio R of the first variant stands
beside it. On real data the
same choice is read from the deletion check. docs/faithfulness.md says how the statistics are scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from citylens.analysis.concepts import object_importance
from citylens.analysis.faithfulness import FAITHFULNESS_FILE, RATIOS_FILE
from citylens.figures import save
from citylens.pipeline.runs import Run, pair_group
from citylens.report import markdown as md
from citylens.report import sweep_figures
from citylens.report.faithfulness import (
    causal_path,
    primary_method,
    read_table,
    stacked_tables,
    variant_dirs,
)
from citylens.report.sections import Section

TITLE = "What makes each city recognisable"
ATTRIBUTION_FILE = "object_attribution.csv"
CONCEPTS_FILE = "concepts.csv"
# Per statistic: the file it is read from (a variant's; concepts.csv is the run's) and its value column.
STATISTICS = {
    "ratio": (RATIOS_FILE, "ratio"),
    "attribution": (ATTRIBUTION_FILE, "attribution"),
    "concept": (CONCEPTS_FILE, "importance"),
}
WORDS = {
    "ratio": "object ratio R",
    "attribution": "object attribution A (signed sum over the object)",
    "concept": "concept importance (each object: its most important concept named after it)",
}
AXIS = {
    "ratio": "R (explained / all px)",
    "attribution": "A (object attribution, log P units)",
    "concept": "concept importance (drop of log P)",
}
TOP = 5
# Explainers by their measured faithfulness on the synthetic cities (docs/gpu.md), for data without a check.
RECOMMENDED = ("occlusion", "ig", "shapley", "smoothgrad", "ixg")


@dataclass(frozen=True)
class Choice:
    """The (variant, statistic) the headline reads and how faithful it measured."""

    variant: str
    statistic: str
    method: str
    spearman: float
    p_at_k: float
    n_cases: int
    n_perfect: int

    def words(self) -> str:
        if self.statistic == "concept":  # the run's concepts: no explainer, no variant
            return f"{WORDS['concept']} of the concept step"
        return f"{WORDS.get(self.statistic, self.statistic)} of the {self.variant} variant"


def choose(rows: pd.DataFrame) -> Choice | None:
    """The (variant, statistic) with the highest mean Spearman rho against the primary causal method (ties:
    the higher mean P@k, then the first listed); None when no row has a finite rho."""
    if rows.empty:
        return None
    rows = rows if "statistic" in rows.columns else rows.assign(statistic="ratio")
    method = primary_method(rows)
    mine = rows[(rows["method"] == method) & rows["statistic"].isin(list(STATISTICS))]
    scores = []
    for (variant, statistic), g in mine.groupby(["variant", "statistic"], sort=False):
        rho = g["spearman"].astype(float)
        p_at_k = g["p_at_k"].astype(float)
        if rho.notna().any():
            perfect = int((p_at_k >= 1).sum())
            scores.append(Choice(variant, statistic, method, rho.mean(), p_at_k.mean(), len(g), perfect))
    if not scores:
        return None
    return max(scores, key=lambda c: (c.spearman, c.p_at_k))


def object_values(run: Run, variant: str, statistic: str) -> pd.DataFrame:
    """One run's per-object values of a statistic: city, object, value, low, high (empty if not written;
    low and high NaN in a table without intervals).

    Ratios are the kept objects at the run's threshold; attributions every object the variant scored;
    concepts every object named after one of the city's concepts (its most important one, the run's
    concepts.csv: `variant` plays no part)."""
    filename, column = STATISTICS[statistic]
    folder = run.path if statistic == "concept" else variant_dirs(run).get(variant, run.path)
    table = read_table(folder / filename)
    if table is None or table.empty:
        return pd.DataFrame(columns=["city", "object", "value", "low", "high"])
    if statistic == "ratio":
        table = table[np.isclose(table["threshold"], run.threshold) & table["kept"].astype(bool)]
    if statistic == "concept":
        table = object_importance(table).rename(
            columns={"importance_low": "ci_low", "importance_high": "ci_high"}
        )
    return pd.DataFrame(
        {
            "city": table["city"],
            "object": table["object"],
            "value": table[column].astype(float),
            "low": table.get("ci_low", pd.Series(np.nan, index=table.index)).astype(float),
            "high": table.get("ci_high", pd.Series(np.nan, index=table.index)).astype(float),
        }
    )


def ranked_objects(runs: Sequence[Run], variant: str, statistic: str, top: int = TOP) -> pd.DataFrame:
    """Per architecture and city, the `top` objects by their value averaged over the architecture's runs:
    arch, city, rank, object, value (mean over runs), seed_sd (NaN with one run), n_runs, low, high (mean
    of the runs' 95% intervals over test places)."""
    parts = [object_values(r, variant, statistic).assign(arch=r.arch) for r in runs]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(
            columns=["arch", "city", "rank", "object", "value", "seed_sd", "n_runs", "low", "high"]
        )
    stacked = pd.concat(parts, ignore_index=True)
    grouped = stacked.groupby(["arch", "city", "object"], sort=False)
    table = grouped.agg(
        value=("value", "mean"),
        seed_sd=("value", "std"),
        n_runs=("value", "count"),
        low=("low", "mean"),
        high=("high", "mean"),
    ).reset_index()
    table = table.sort_values(["arch", "city", "value", "object"], ascending=[True, True, False, True])
    table["rank"] = table.groupby(["arch", "city"]).cumcount() + 1
    order = {a: i for i, a in enumerate(dict.fromkeys(r.arch for r in runs))}
    table = table[table["rank"] <= top].sort_values(["arch", "city", "rank"], key=_arch_key(order))
    return table[["arch", "city", "rank", "object", "value", "seed_sd", "n_runs", "low", "high"]]


def _arch_key(order: dict[str, int]) -> Callable[[pd.Series], pd.Series]:
    """A pandas sort key that orders the `arch` column as the sweep lists its architectures."""
    return lambda c: c.map(order) if c.name == "arch" else c


AGREEMENT_COLUMNS = ["group", "run_a", "run_b", "label_a", "label_b", "n_cities", "rho", "distance"]


def importance_agreement(runs: Sequence[Run], variant: str, statistic: str) -> pd.DataFrame:
    """Do two runs rank the objects alike? Per pair of runs with the statistic: Spearman rho of their
    per-object values over the objects both scored, per common city, averaged over cities; distance = 1 - rho
    (0: the same ranking, 2: reversed), the input of the architecture-vs-seed relabelling test."""
    values = {r.name: object_values(r, variant, statistic) for r in runs}
    rows = []
    for a, b in combinations([r for r in runs if len(values[r.name])], 2):
        va, vb = values[a.name], values[b.name]
        rhos = []
        for city in sorted(set(va["city"]) & set(vb["city"])):
            both = va[va["city"] == city].merge(vb[vb["city"] == city], on="object", suffixes=("_a", "_b"))
            if len(both) >= 3 and both["value_a"].nunique() > 1 and both["value_b"].nunique() > 1:
                rhos.append(float(both["value_a"].rank().corr(both["value_b"].rank())))
        if rhos:
            rho = float(np.mean(rhos))
            ident = {"group": pair_group(a.arch, b.arch), "run_a": a.name, "run_b": b.name}
            ident |= {"label_a": a.label, "label_b": b.label}
            rows.append({**ident, "n_cities": len(rhos), "rho": rho, "distance": 1.0 - rho})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def tested_objects(runs: Sequence[Run], method: str) -> set[tuple[str, str]]:
    """The (city, object) pairs with a causal effect of `method` in any of the runs' causal.csv."""
    pairs = set()
    for run in runs:
        causal = read_table(causal_path(run))
        if causal is not None:
            mine = causal[causal["method"] == method]
            pairs |= set(zip(mine["city"], mine["object"]))
    return pairs


def _cell(row: pd.Series, planted: Sequence[str], untested: bool = False) -> str:
    """'fence* 0.42 ± 0.05': object (* planted, † no causal effect measured), mean over runs, SD over seeds
    where there are two."""
    mark = ("*" if row["object"] in planted else "") + ("†" if untested else "")
    sd = f" ± {md.fmt(row['seed_sd'], 2)}" if np.isfinite(row["seed_sd"]) else ""
    return f"{row['object']}{mark} {md.fmt(row['value'], 2)}{sd}"


def headline_rows(
    runs: Sequence[Run], choice: Choice, paper_variant: str, planted: dict[str, list[str]]
) -> pd.DataFrame:
    """One row per architecture and city: the chosen statistic's top objects and the paper's R top objects."""
    best = ranked_objects(runs, choice.variant, choice.statistic)
    paper = ranked_objects(runs, paper_variant, "ratio", top=3)
    tested = tested_objects(runs, choice.method)
    rows = []
    for (arch, city), g in best.groupby(["arch", "city"], sort=False):
        p = paper[(paper["arch"] == arch) & (paper["city"] == city)]
        mine = planted.get(city, [])
        cells = [_cell(r, mine, bool(tested) and (city, r["object"]) not in tested) for _, r in g.iterrows()]
        rows.append(
            {
                "arch": arch,
                "city": city,
                "runs": int(g["n_runs"].max()),
                "top": ", ".join(cells),
                "paper": ", ".join(_cell(r, mine) for _, r in p.iterrows()) or "–",
            }
        )
    return pd.DataFrame(rows, columns=["arch", "city", "runs", "top", "paper"])


def _reading(choice: Choice, paper: Choice | None) -> str:
    if choice.n_cases == 0:
        return (
            f"the objects are ranked by the {choice.words()}, unscored: no causal table checks this sweep's "
            "explanations (on real data, `analysis.steps.causal.enabled=true` adds the deletion check). "
            "Of the "
            "explainers measured on the synthetic cities this one followed the counterfactual effects best "
            "(docs/gpu.md)."
        )
    text = (
        f"the objects are ranked by the {choice.words()}: of every explanation this sweep computed, its "
        f"ranking agrees best with the {choice.method} effects (mean Spearman rho "
        f"{md.fmt(choice.spearman, 2)}, mean P@k {md.fmt(choice.p_at_k, 2)}, P@k = 1 in {choice.n_perfect} "
        f"of {choice.n_cases} run-city cases)"
    )
    if paper is not None and (paper.variant, paper.statistic) != (choice.variant, choice.statistic):
        text += (
            f"; the paper's object ratio R ({paper.variant}) reaches rho {md.fmt(paper.spearman, 2)}, "
            f"P@k = 1 in {paper.n_perfect} of {paper.n_cases}"
        )
    return text + "."


def headline_choice(runs: Sequence[Run]) -> Choice | None:
    """The (variant, statistic) the headline reads for these runs: the most faithful one, else (no causal
    table scored them, as on real data without the deletion check) the object attribution of the explainer
    first in RECOMMENDED that the runs hold, unscored; None when there is neither."""
    choice = choose(stacked_tables(runs, FAITHFULNESS_FILE))
    if choice is not None or not runs:
        return choice
    held = {
        name.split("-", 1)[0]: name
        for name, d in variant_dirs(runs[0]).items()
        if (d / ATTRIBUTION_FILE).is_file()
    }
    best = next((held[e] for e in RECOMMENDED if e in held), None)
    return Choice(best, "attribution", "", float("nan"), float("nan"), 0, 0) if best else None


def headline_section(runs: Sequence[Run], choice: Choice, out: Path) -> Section:
    """The report's first section: per architecture and city the objects by the chosen statistic."""
    rows = stacked_tables(runs, FAITHFULNESS_FILE)
    paper_variant = runs[0].variant
    rows = rows if "statistic" in rows.columns else rows.assign(statistic="ratio")
    paper = (
        choose(rows[(rows["variant"] == paper_variant) & (rows["statistic"] == "ratio")])
        if len(rows)
        else None
    )
    planted = {c: p for r in runs for c, p in r.planted.items()}
    table = headline_rows(runs, choice, paper_variant, planted)
    body = md.md_table(
        table,
        {
            "arch": "architecture",
            "city": "city",
            "runs": "runs",
            "top": f"top objects by {choice.statistic} (mean ± SD over seeds)",
            "paper": f"paper's R, top 3 ({paper_variant})",
        },
    )
    body += (
        f"\n\n* = planted in the city (synthetic data); † = no {choice.method} effect was measured for it "
        "(e.g. a background class the generator cannot remove), so its rank rests on the explainer "
        "alone and the faithfulness score above does not cover it. Each value is the mean over the "
        "architecture's runs of the city's per-object statistic; every run's 95% interval over test places "
        f"is in {STATISTICS[choice.statistic][0]} of its "
        f"{'run' if choice.statistic == 'concept' else 'variant'} folder. Why this statistic: "
        "docs/faithfulness.md."
    )
    figure = None
    tested = tested_objects(runs, choice.method)
    tables = []
    for r in runs:
        table = object_values(r, choice.variant, choice.statistic).rename(columns={"value": "ratio"})
        untested = [bool(tested) and pair not in tested for pair in zip(table["city"], table["object"])]
        table["object"] = table["object"].where(
            ~pd.Series(untested, index=table.index), table["object"] + "†"
        )
        tables.append(table.assign(kept=True))
    if any(len(t) for t in tables):
        fig = sweep_figures.ratio_bars_runs(
            tables,
            [r.label for r in runs],
            [r.arch for r in runs],
            planted,
            value_label=AXIS[choice.statistic],
            title=f"{TITLE}: {choice.words()}, every run",
        )
        figure = save(fig, out / f"headline_{choice.statistic}.png").name
    return Section(TITLE, _reading(choice, paper), body, figure)
