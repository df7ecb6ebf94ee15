"""The report's concept section: each run's most important concepts per city (the runs' concepts.csv), how
often a city's top concept sits on an object of its counterfactual top 2, the visual-element figures, and
whether runs find the same concepts: per pair of runs, their concepts matched one to one (Hungarian) on the
correlation of per-image strengths over the shared test images; architecture pairs against seed pairs with
the relabelling test of Table 2 (report.tables.comparison_tests). Beside each city's top concept: the drop
of P(true city) when it is removed from the activation (concepts.csv's importance_p) next to the drop when
the city's top object of the causal table is removed from the image (causal.csv's effect, read as is)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from citylens.analysis.concepts import concept_strength, match_concepts
from citylens.analysis.faithfulness import CAUSAL_FILE, FAITHFULNESS_FILE
from citylens.core.io import read_json
from citylens.pipeline.runs import Run, pair_group
from citylens.report import markdown as md
from citylens.report.faithfulness import primary_method, read_table, stacked_tables
from citylens.report.sections import Section

CONCEPTS_FILE = "concepts.csv"
AGREEMENT_COLUMNS = ["group", "run_a", "run_b", "label_a", "label_b", "n_images", "agreement", "distance"]
SUMMARY_COLUMNS = [
    "run", "label", "city", "concept", "object", "importance", "causal_rank", "second_rank", "has_causal",
    "drop_p", "top_object", "object_effect", "effect_method",
]  # fmt: skip


RANKS = ("causal_rank", "second_rank")  # whole numbers in the table (NaN: no rank)


def run_concepts(run: Run) -> tuple[pd.DataFrame, np.ndarray, list[str]] | None:
    """A run's concepts.csv, per-image concept strengths (N, k) and their image ids; None without them."""
    table_path, maps_path = run.path / CONCEPTS_FILE, run.path / "concepts" / "maps.npy"
    meta = read_json(run.path / "concepts" / "meta.json")
    if not table_path.is_file() or not maps_path.is_file() or not isinstance(meta, dict):
        return None
    maps = np.load(maps_path, allow_pickle=False)
    return pd.read_csv(table_path), concept_strength(maps), list(meta.get("image_ids", []))


def top_objects(causal: pd.DataFrame | None) -> tuple[dict[str, tuple[str, float]], str]:
    """Each city's object of largest effect in a causal table with that effect, under its primary method
    (counterfactual, else deletion), and the method; ({}, "") without effects."""
    if causal is None or causal.empty:
        return {}, ""
    method = primary_method(causal)
    rows = causal[(causal["method"] == method) & np.isfinite(causal["effect"].astype(float))]
    ranked = rows.sort_values(["city", "effect", "object"], ascending=[True, False, True])
    first = ranked.drop_duplicates("city")
    return {c: (o, float(e)) for c, o, e in zip(first["city"], first["object"], first["effect"])}, method


def concept_summary(runs: Sequence[Run]) -> pd.DataFrame:
    """Per run and city: the most important concept, its object and causal rank, the causal rank of the
    second most important concept's object, and whether the run has a causal table at all (a concept named
    after an object without a causal effect, or after none, then has no rank: it is not on the top 2).
    Removal side by side: drop_p, the mean drop of P(true city) without the top concept (NaN in a
    concepts.csv without importance_p), and the city's top object of causal.csv with its effect (the mean
    drop of P(true city) without the object in the image) and method."""
    rows = []
    for run in runs:
        found = run_concepts(run)
        if found is None:
            continue
        has_causal = (run.path / CAUSAL_FILE).is_file()
        tops, method = top_objects(read_table(run.path / CAUSAL_FILE))
        for city, table in found[0].groupby("city", sort=False):
            top = table.sort_values("importance", ascending=False, kind="stable")
            second = top["causal_rank"].iloc[1] if len(top) > 1 else np.nan
            first = top.iloc[0]
            obj, effect = tops.get(city, ("", np.nan))
            rows.append(
                {"run": run.name, "label": run.label, "city": city, "concept": int(first["concept"]),
                 "object": first["object"] if isinstance(first["object"], str) else "no object",
                 "importance": float(first["importance"]), "causal_rank": float(first["causal_rank"]),
                 "second_rank": float(second), "has_causal": has_causal,
                 "drop_p": float(first.get("importance_p", np.nan)), "top_object": obj,
                 "object_effect": effect, "effect_method": method if obj else ""}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def concept_agreement(runs: Sequence[Run]) -> pd.DataFrame:
    """Per pair of runs with concepts: the mean correlation of their matched concepts over the test images
    both scored (agreement) and 1 - agreement (distance), the input of the relabelling test."""
    found = {r.name: run_concepts(r) for r in runs}
    rows = []
    for a, b in combinations([r for r in runs if found[r.name] is not None], 2):
        (_, sa, ids_a), (_, sb, ids_b) = found[a.name], found[b.name]
        index_b = {image: i for i, image in enumerate(ids_b)}
        shared = [(i, index_b[image]) for i, image in enumerate(ids_a) if image in index_b]
        if len(shared) < 3:
            continue
        ia, ib = (np.array(x) for x in zip(*shared))
        match = match_concepts(sa[ia], sb[ib])
        ident = {"group": pair_group(a.arch, b.arch), "run_a": a.name, "run_b": b.name}
        ident |= {"label_a": a.label, "label_b": b.label, "n_images": len(shared)}
        rows.append({**ident, "agreement": match.agreement, "distance": 1.0 - match.agreement})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def concept_faithfulness(runs: Sequence[Run]) -> pd.DataFrame:
    """The `concept` rows of the runs' faithfulness.csv under the primary causal method, one per run and city
    (every variant's file holds the same ones); empty when there are none."""
    rows = stacked_tables(runs, FAITHFULNESS_FILE)
    if rows.empty or "statistic" not in rows:
        return pd.DataFrame()
    mine = rows[rows["statistic"] == "concept"]
    if mine.empty:
        return mine
    return mine[mine["method"] == primary_method(mine)].drop_duplicates(["run", "city"])


def concept_section(runs: Sequence[Run], summary: pd.DataFrame, agreement: pd.DataFrame) -> Section:
    """The concepts each run found, their names, how often they are the causal truth, and their agreement."""
    ranked = summary[summary["has_causal"].astype(bool)] if len(summary) else summary
    on_top2 = int((ranked["causal_rank"] <= 2).sum())
    either = int(((ranked["causal_rank"] <= 2) | (ranked["second_rank"] <= 2)).sum())
    if len(ranked):
        reading = (
            f"a city's most important concept sits on an object of its counterfactual top 2 in {on_top2} of "
            f"{len(ranked)} run-city cases with a causal table, one of its two most important in {either}"
        )
    else:
        reading = (
            "no run has a causal table to check its concepts against; the names come from the label maps"
        )
    scored = concept_faithfulness(runs)
    if len(scored):
        reading += (
            f". Ranked by their concepts (each object: its most important concept), the objects follow the "
            f"{scored['method'].iloc[0]} effects with mean Spearman rho "
            f"{md.fmt(scored['spearman'].astype(float).mean(), 2)} and mean P@k "
            f"{md.fmt(scored['p_at_k'].astype(float).mean(), 2)} over {len(scored)} run-city cases "
            "(faithfulness.csv, statistic concept)"
        )
    both = summary.dropna(subset=["drop_p", "object_effect"]) if len(summary) else summary
    if len(both):
        more = int((both["drop_p"] > both["object_effect"]).sum())
        concept, obj = md.fmt(both["drop_p"].mean(), 3), md.fmt(both["object_effect"].mean(), 3)
        reading += (
            f". Removing a city's top concept from the activation lowers P(true city) by {concept} on "
            f"average, removing its top object of the causal table from the image by {obj}; the concept "
            f"more in {more} of {len(both)} run-city cases"
        )
    if len(agreement):
        by_group = agreement.groupby("group")["agreement"].mean()
        words = ", ".join(f"{g} pairs {md.fmt(v, 2)}" for g, v in by_group.items())
        reading += f". Matched concepts agree (mean correlation of per-image strength) {words}"
    columns = {"label": "run", "city": "city", "concept": "top concept", "object": "named after"}
    columns |= {"importance": "importance (log P drop)", "causal_rank": "its causal rank"}
    columns |= {"second_rank": "2nd's causal rank", "drop_p": "P drop without it"}
    columns |= {"top_object": "top causal object", "object_effect": "P drop without the object"}
    ranks = {c: [md.fmt(v) if pd.isna(v) else str(int(v)) for v in summary[c]] for c in RANKS}
    body = md.md_table(summary.assign(**ranks) if len(summary) else summary, columns)
    figures = []
    for run in runs[:1]:
        for path in sorted((run.path / "concepts" / "figures").glob("concepts_*.png")):
            rel = Path("..") / run.name / "concepts" / "figures" / path.name
            figures.append(f"![{run.label}: {path.stem.removeprefix('concepts_')}]({rel.as_posix()})")
    note = (
        "Concepts are found without a vocabulary: NMF of one layer's activations over validation images, "
        "scored on the test images by the drop of log P(true city) when a concept is removed from the "
        "activation, named after the labelled object its maps concentrate on (lift >= the step's min_lift), "
        "else 'no object' (docs/concepts.md). Causal rank: the named object's rank in the city's "
        "counterfactual effects (causal.csv; 1 = the largest). P drop without it: the mean drop of P(true "
        "city) over the city's test images when the concept is removed from the layer's activation; P drop "
        "without the object: the causal table's effect of the city's top object, removed from the image "
        "(counterfactual, else deletion; the causal step's image sample). Figures: the first run's visual "
        "elements per city; every run's are in its concepts/figures/."
    )
    return Section("Concepts the networks found", reading + ".", "\n\n".join([body, *figures, note]))
