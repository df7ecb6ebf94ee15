"""report.md: Markdown tables and the one-line readings, each computed from the numbers it reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def fmt(value: object, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals; None, NaN and infinities (of any float type) as a dash."""
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}"
    return str(value)


def p_text(p: float) -> str:
    """A p-value as text: three significant digits, or '< 0.001'."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def md_table(table: pd.DataFrame, columns: dict[str, str], digits: int = 3) -> str:
    """A Markdown table of the given columns (name -> header)."""
    head = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(row[c], digits) for c in columns) + " |" for _, row in table.iterrows()]
    return "\n".join([head, rule, *body])


def role(primary: bool) -> str:
    """'primary' or 'secondary': which test the report's conclusion rests on."""
    return "primary" if primary else "secondary"


def interval(row: pd.Series, digits: int = 4) -> str:
    """'0.3120 [0.2980, 0.3270]': an AR with its 95% interval (4 decimals, as the paper's Table 2)."""
    return f"{fmt(row['ar'], digits)} [{fmt(row['ci_low'], digits)}, {fmt(row['ci_high'], digits)}]"


INTERVAL_WORDS = "95% interval over test places, for these trained networks"


def reading_comparison(test: pd.Series, what: str, measure: str, n_runs: int) -> str:
    """The reading of one test over run relabellings: do architecture pairs differ more than seed pairs?

    Reads the adjusted p (the raw one for the primary test)."""
    b, w, nb, nw, p = (
        test[k] for k in ("between_mean", "within_mean", "n_between", "n_within", "p_adjusted")
    )
    if nb == 0 and nw == 0:
        return f"No {what} to compare: the comparison needs two finished runs ({n_runs} here)."
    if nw == 0:
        return (
            f"Mean {measure} between architectures {fmt(b)}; no seed pairs, so the test against retrained "
            "twins needs two seeds of one architecture (e.g. seed=0,1)."
        )
    if nb == 0:
        return (
            f"Mean {measure} between seeds of one architecture {fmt(w)}; one architecture only, so the "
            "test needs a second architecture in the sweep."
        )
    if not np.isfinite(p):
        return f"Mean {measure} between architectures {fmt(b)} vs between seeds {fmt(w)}; not tested."
    if p < 0.05:
        verdict = f"{what} differ more between architectures than between seeds"
    elif b > w:
        verdict = (
            f"{what} differ somewhat more between architectures than between seeds, but not significantly"
        )
    else:
        verdict = f"{what} do not differ more between architectures than between seeds"
    n = int(test["n_relabellings"])
    adjusted = "" if test["primary"] else " Holm-adjusted"
    return (
        f"{verdict}: mean {measure} {fmt(b)} vs {fmt(w)},{adjusted} {p_text(p)} ({nb} vs {nw} pairs; {n} "
        f"relabellings of the runs, so p >= {fmt(1 / n, 3)})."
    )


def reading_table2(grouped: pd.DataFrame) -> str:
    """How the sweep's grouped AR compares with the paper's Table 2 for the same groups."""
    known = grouped[np.isfinite(grouped["paper_ar"].astype(float))]
    if known.empty:
        return "The paper has no values for these architectures."
    parts = []
    for group, name in (("architecture", "architecture"), ("seed", "seed")):
        rows = known[known["group"] == group]
        if len(rows):
            parts.append(
                f"{name} pairs {fmt(rows['ar'].mean())} here vs {fmt(rows['paper_ar'].mean())} in the paper"
            )
    return "Against the paper's Table 2 for the same groups: " + "; ".join(parts) + "."


def reading_heatmap(pairs: pd.DataFrame) -> str:
    """The most alike and the most different pair of runs."""
    low, high = pairs.loc[pairs["ar"].idxmin()], pairs.loc[pairs["ar"].idxmax()]
    return (
        f"Most alike: {low['label_a']} vs {low['label_b']} (AR {fmt(low['ar'])}); most different: "
        f"{high['label_a']} vs {high['label_b']} (AR {fmt(high['ar'])})."
    )


def reading_tsne(purity: dict[str, float]) -> str:
    """How well the cities separate in each run's t-SNE map of the masks."""
    finite = {k: v for k, v in purity.items() if np.isfinite(v)}
    if not finite:
        return "No run has a usable t-SNE map (too few images, or degenerate masks)."
    best, worst = max(finite, key=finite.get), min(finite, key=finite.get)
    mean = float(np.mean(list(finite.values())))
    return (
        f"Cities separate in the mask maps with a 5-nearest-neighbour city purity from "
        f"{fmt(finite[worst], 2)} ({worst}) to {fmt(finite[best], 2)} ({best}); mean {fmt(mean, 2)} "
        "(0.5 = no separation for two balanced cities)."
    )


def reading_ratios(top: dict[str, list[str]]) -> str:
    """Which object tops each city's ratios, and in how many runs (top = city -> each run's top object)."""
    parts = []
    for city, names in top.items():
        counts = pd.Series(names).value_counts()
        lead = ", ".join(f"{obj} in {n}/{len(names)}" for obj, n in counts.head(2).items())
        parts.append(f"{city}: {lead}")
    if not parts:
        return "No run has object ratios (analysis.steps.objects was off or failed)."
    return "Top object per city across runs: " + "; ".join(parts) + " runs."


def spread_table(shown: pd.DataFrame) -> str:
    """R per object (rows) and architecture (columns) as 'mean ± SD across seeds (runs)' (ratio_spread)."""
    cell = [f"{fmt(r['mean'], 3)} ± {fmt(r['seed_sd'], 3)} ({r['n_runs']})" for _, r in shown.iterrows()]
    wide = shown.assign(cell=cell).pivot_table(
        index=["data_group", "city", "object"], columns="arch", values="cell", aggfunc="first", sort=False
    )
    wide = wide.fillna("–").reset_index()
    archs = list(dict.fromkeys(shown["arch"]))
    columns = {"city": "city", "object": "object", **{a: a for a in archs}}
    if wide["data_group"].nunique() > 1:
        columns = {"data_group": "data group", **columns}
    note = (
        "R per architecture: mean ± SD across its seeds (number of runs); the SD is a dash with one run. "
        "All kept objects are in ratio_spread.csv."
    )
    return md_table(wide, columns) + "\n\n" + note


def reading_spread(shown: pd.DataFrame) -> str:
    """How much R of the shown objects moves between seeds of one architecture, and between architectures."""
    if shown.empty:
        return ""
    finite = shown[np.isfinite(shown["seed_sd"].astype(float))]
    if finite.empty:
        return "With one run per architecture, the spread of R across seeds is unknown."
    worst = finite.loc[finite["seed_sd"].astype(float).idxmax()]
    median = fmt(float(finite["seed_sd"].median()))
    between = shown.groupby(["data_group", "city", "object"])["mean"].std().dropna()
    text = (
        f"Across seeds of one architecture R of the objects below varies with a median SD of {median} "
        f"(largest {fmt(float(worst['seed_sd']))}: {worst['object']} in {worst['city']}, {worst['arch']})"
    )
    if len(between):
        text += f"; the architectures' mean R differ with a median SD of {fmt(float(between.median()))}"
    return text + "."


def reading_examples(agree: int, n_images: int, spread: Sequence[float], ids: Sequence[str]) -> str:
    """Prediction agreement on the sample images and how far their masks differ across runs."""
    text = f"The runs agree on the predicted city for {agree} of {n_images} sample images"
    if len(spread):
        i, j = int(np.argmin(spread)), int(np.argmax(spread))
        text += (
            f"; mean AR across runs per image from {fmt(spread[i])} ({ids[i]}) to {fmt(spread[j])} ({ids[j]})"
        )
    return text + "."


def reading_recovery(recovery: pd.DataFrame) -> str:
    """How often the ratio ranking puts the planted cues on top."""
    perfect = int((recovery["precision_at_k"] >= 1).sum())
    worst = recovery.loc[recovery["precision_at_k"].idxmin()]
    return (
        f"Planted cues ranked on top (P@k = 1) in {perfect} of {len(recovery)} run-city cases, mean P@k "
        f"{fmt(recovery['precision_at_k'].mean(), 2)}; lowest: {worst['label']} in {worst['city']} "
        f"(P@k {fmt(float(worst['precision_at_k']), 2)})."
    )
