"""The sweep report's faithfulness part: do the explanations point at what the networks use, and do they
depend on what the networks learned? Reads each run's causal.csv, faithfulness.csv and sanity.csv.

Planted = what the data holds (synthetic data), causal = what the network learned (causal.csv), R = what the
explanation shows (object_ratios.csv); docs/faithfulness.md says how to read their disagreements. Where a
run's files lie is decided by `variant_dirs` and `causal_path` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from citylens.analysis.causal import METHODS
from citylens.analysis.faithfulness import CAUSAL_FILE, FAITHFULNESS_FILE, RATIOS_FILE
from citylens.analysis.sanity import FULL, SANITY_FILE, SANITY_FLAG_RHO
from citylens.core import run_folder
from citylens.core.io import write_csv
from citylens.figures import save
from citylens.pipeline.runs import Run
from citylens.report import markdown as md
from citylens.report import sweep_figures
from citylens.report.sections import Section

DEFAULT_VARIANT = "default"
# The causal truth a table is scored against, best first: the renderer's counterfactual, else deletion.
TITLE = "Do the explanations point at what the networks use?"
SANITY_TITLE = "Sanity check: do the masks depend on what the networks learned?"


def variant_dirs(run: Run) -> dict[str, Path]:
    """A run's analysis folders by variant name: each `<run>/analysis/<variant>/` with a mask store, else
    (a run of the layout before variants) the run folder."""
    return {p.name: p for p in run_folder.variant_dirs(run.path)} or {DEFAULT_VARIANT: run.path}


def causal_path(run: Run) -> Path:
    """The run's causal table (per network, not per explainer)."""
    return run.path / CAUSAL_FILE


def read_table(path: Path) -> pd.DataFrame | None:
    """A CSV a run wrote, or None when it is not there."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.is_file() else None


def stacked_tables(runs: Sequence[Run], filename: str) -> pd.DataFrame:
    """Every run's and variant's `filename`, with run, label, arch, seed and variant columns in front."""
    parts = []
    for run in runs:
        for variant, folder in variant_dirs(run).items():
            table = read_table(folder / filename)
            if table is not None and len(table):
                ident = {"run": run.name, "label": run.label, "arch": run.arch, "seed": run.seed}
                parts.append(table.assign(**ident, variant=variant))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def primary_method(table: pd.DataFrame) -> str:
    """The causal method the section reads: counterfactual where any run has it, else deletion, else any."""
    present = list(dict.fromkeys(table["method"]))
    return next((m for m in METHODS if m in present), present[0])


def _two(value: float) -> str:
    """Two decimals, with no '-0.00' for a value that rounds to zero."""
    return md.fmt(round(float(value), 2) + 0.0, 2)


def _spread(values: pd.Series) -> str:
    """'0.61 [0.52, 0.70]': mean over seeds with the lowest and highest run (one run: the value alone)."""
    v = values.astype(float).dropna()
    if v.empty:
        return "–"
    if len(v) == 1:
        return _two(v.iloc[0])
    return f"{_two(v.mean())} [{_two(v.min())}, {_two(v.max())}]"


def _consensus(values: pd.Series) -> str:
    """The most common entry over seeds (ties: the first run's), with its count when the seeds disagree."""
    entries = values.fillna("").astype(str).tolist()
    if not entries:
        return "–"
    top = max(dict.fromkeys(entries), key=entries.count)
    n = entries.count(top)
    return (top or "–") + ("" if n == len(values) else f" ({n}/{len(values)} runs)")


def faithfulness_summary(rows: pd.DataFrame, arch_order: Sequence[str]) -> pd.DataFrame:
    """Per (variant, method, architecture, city): means over seeds, their range, the rankings' tops."""
    out = []
    for (variant, method, arch, city), g in rows.groupby(["variant", "method", "arch", "city"], sort=False):
        out.append(
            {
                "variant": variant,
                "method": method,
                "arch": arch,
                "city": city,
                "n_runs": len(g),
                "k": int(g["k"].max()),
                "spearman": float(g["spearman"].astype(float).mean()),
                "spearman_min": float(g["spearman"].astype(float).min()),
                "spearman_max": float(g["spearman"].astype(float).max()),
                "p_at_k": float(g["p_at_k"].astype(float).mean()),
                "p_at_k_min": float(g["p_at_k"].astype(float).min()),
                "p_at_k_max": float(g["p_at_k"].astype(float).max()),
                "spearman_text": _spread(g["spearman"]),
                "p_at_k_text": _spread(g["p_at_k"]),
                "planted": _consensus(g["planted"]),
                "causal_top": _consensus(g["causal_top"]),
                "explained_top": _consensus(g["explained_top"]),
                "causal_planted_p_at_k": float(g["causal_planted_p_at_k"].astype(float).mean()),
                "explained_planted_p_at_k": float(g["explained_planted_p_at_k"].astype(float).mean()),
            }
        )
    table = pd.DataFrame(out)
    rank = {a: i for i, a in enumerate(arch_order)}
    return table.sort_values(
        ["variant", "method", "arch", "city"], key=lambda c: c.map(rank) if c.name == "arch" else c
    ).reset_index(drop=True)


def faithfulness_points(runs: Sequence[Run], rows: pd.DataFrame, variant: str, method: str) -> pd.DataFrame:
    """One point per run, city and object scored in `rows`: R (kept, at the row's threshold), effect."""
    parts = []
    for run in runs:
        mine = rows[(rows["run"] == run.name) & (rows["variant"] == variant) & (rows["method"] == method)]
        ratios = read_table(variant_dirs(run).get(variant, run.path) / RATIOS_FILE)
        causal = read_table(causal_path(run))
        if mine.empty or ratios is None or causal is None:
            continue
        for city, threshold in zip(mine["city"], mine["threshold"]):
            r = ratios[(ratios["city"] == city) & np.isclose(ratios["threshold"], threshold) & ratios["kept"]]
            e = causal[(causal["city"] == city) & (causal["method"] == method)]
            both = r[["object", "ratio"]].merge(e[["object", "effect"]], on="object")
            planted = set(run.planted.get(city, []))
            parts.append(
                both.assign(arch=run.arch, label=run.label, city=city, planted=both["object"].isin(planted))
            )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _reading(rows: pd.DataFrame, method: str, variant: str) -> str:
    by_arch = rows.groupby("arch", sort=False)["spearman"].mean().dropna()
    text = (
        f"Against the {method} effects ({variant} variant), the object-ratio ranking has mean Spearman rho "
        f"{_two(rows['spearman'].mean())} and mean P@k {_two(rows['p_at_k'].mean())} "
        f"over {len(rows)} run-city cases"
    )
    if len(by_arch) > 1:
        best, worst = by_arch.idxmax(), by_arch.idxmin()
        text += f"; highest rho {best} ({_two(by_arch[best])}), lowest {worst} ({_two(by_arch[worst])})"
    planted = rows[rows["planted"].fillna("").astype(str) != ""]
    if len(planted):
        uses = int((planted["causal_planted_p_at_k"] >= 1).sum())
        shows = int((planted["explained_planted_p_at_k"] >= 1).sum())
        text += (
            f". The networks' causal top-k is exactly the planted cues in {uses} of {len(planted)} cases; "
            f"the explanations' top-k in {shows}"
        )
    return text + "."


def faithfulness_section(runs: Sequence[Run], out: Path) -> tuple[Section, pd.DataFrame] | None:
    """The table per architecture and the R-vs-effect figure; None when no run has faithfulness.csv."""
    rows = stacked_tables(runs, FAITHFULNESS_FILE)
    # Attribution variants also score A_p^c, runs with concepts their concepts; this section reads R.
    if "statistic" in rows:
        rows = rows[rows["statistic"].fillna("ratio") == "ratio"].drop(columns="statistic")
    if rows.empty:
        return None
    summary = faithfulness_summary(rows, list(dict.fromkeys(r.arch for r in runs)))
    method = primary_method(rows)
    variants = list(dict.fromkeys(rows["variant"]))
    shown = summary[summary["method"] == method]
    columns = {
        "arch": "architecture",
        "city": "city",
        "n_runs": "runs",
        "spearman_text": "Spearman rho [min, max]",
        "p_at_k_text": "P@k [min, max]",
        "k": "k",
        "planted": "planted (data)",
        "causal_top": "causal top-k (network)",
        "explained_top": "R top-k (explanation)",
    }
    if len(variants) > 1:
        columns = {"variant": "variant", **columns}
    body = md.md_table(shown, columns, digits=2)
    body += (
        f"\n\nrho and P@k compare the R ranking of the kept objects with their {method} effect, per run and "
        "city; the brackets give the lowest and highest run of an architecture. All methods: "
        "faithfulness_summary.csv."
    )
    main = rows[(rows["variant"] == variants[0]) & (rows["method"] == method)]
    points = faithfulness_points(runs, rows, variants[0], method)
    figure = None
    if len(points):
        fig = sweep_figures.ratio_vs_effect(
            points, list(dict.fromkeys(r.arch for r in runs)), method, f"{TITLE} ({variants[0]})"
        )
        figure = save(fig, out / "faithfulness_ratio_vs_effect.png").name
    return Section(TITLE, _reading(main, method, variants[0]), body, figure), summary


def sanity_summary(rows: pd.DataFrame, arch_order: Sequence[str]) -> pd.DataFrame:
    """Per (variant, explainer, architecture, step): mean rho over seeds with its range."""
    grouped = rows.groupby(["variant", "explainer", "arch", "step", "step_name"], sort=False)["mean_spearman"]
    table = grouped.agg(["mean", "min", "max", "count"]).reset_index()
    table = table.rename(columns={"mean": "spearman", "min": "spearman_min", "max": "spearman_max"})
    rank = {a: i for i, a in enumerate(arch_order)}
    return table.sort_values(
        ["variant", "explainer", "arch", "step"], key=lambda c: c.map(rank) if c.name == "arch" else c
    ).reset_index(drop=True)


def sanity_section(runs: Sequence[Run], out: Path) -> tuple[Section, pd.DataFrame] | None:
    """Rank correlation after randomising the top block, the whole cascade and fully; the flag; a figure."""
    rows = stacked_tables(runs, SANITY_FILE)
    if rows.empty:
        return None
    archs = list(dict.fromkeys(r.arch for r in runs))
    summary = sanity_summary(rows, archs)
    lines = []
    for (variant, explainer, arch), g in rows.groupby(["variant", "explainer", "arch"], sort=False):
        cascade = g[(g["step"] > 0) & (g["step_name"] != FULL)]
        first, last = cascade["step"].min(), cascade["step"].max()
        full = g.loc[g["step_name"] == FULL, "mean_spearman"]
        lines.append(
            {
                "variant": variant,
                "explainer": explainer,
                "arch": arch,
                "n_runs": g["run"].nunique(),
                "top": f"{cascade.loc[cascade['step'] == first, 'step_name'].iloc[0]}: "
                + _spread(cascade.loc[cascade["step"] == first, "mean_spearman"]),
                "cascade": _spread(cascade.loc[cascade["step"] == last, "mean_spearman"]),
                "full": _spread(full),
                "full_mean": float(full.mean()),
                "flagged": bool(full.mean() > SANITY_FLAG_RHO),
            }
        )
    table = pd.DataFrame(lines)
    columns = {
        "explainer": "explainer",
        "arch": "architecture",
        "n_runs": "runs",
        "top": "rho, top block random",
        "cascade": "rho, whole cascade",
        "full": "rho, fully random",
        "flagged": f"masks stay similar (rho > {SANITY_FLAG_RHO})",
    }
    if table["variant"].nunique() > 1:
        columns = {"variant": "variant", **columns}
    flagged = table[table["flagged"]]
    n_images = int((rows["n_images"] + rows["n_undefined"]).max())
    if len(flagged):
        names = ", ".join(
            f"{r.explainer} on {r.arch} (rho {_two(r.full_mean)})" for r in flagged.itertuples()
        )
        reading = (
            f"{len(flagged)} of {len(table)} explainer-architecture pairs keep their masks similar after "
            f"full randomisation: {names}; those masks do not depend on what the network learned"
        )
    else:
        low, high = _two(table["full_mean"].min()), _two(table["full_mean"].max())
        reading = (
            "Every explainer's masks change when the weights are randomised: mean rho after full "
            f"randomisation {low if low == high else f'{low} to {high}'}"
        )
    reading += f" (flag: rho > {SANITY_FLAG_RHO}; {n_images} test images per run)."
    body = md.md_table(table, columns, digits=2)
    body += (
        "\n\nMean Spearman rank correlation, over test images, between the trained network's mask and the "
        "mask of the same architecture with re-initialised weights (mean over seeds [lowest, highest run]); "
        "the cascade randomises block by block from the logits down. Every step: sanity_summary.csv."
    )
    main = summary[summary["variant"] == summary["variant"].iloc[0]]
    figure = save(sweep_figures.sanity_cascade(main, archs), out / "sanity_cascade.png").name
    return Section(SANITY_TITLE, reading, body, figure), summary


def faithfulness_sections(runs: Sequence[Run], out: Path) -> list[Section]:
    """Both sections (those whose files some run has), their summary tables written to `out`."""
    sections = []
    for build, name in (
        (faithfulness_section, "faithfulness_summary.csv"),
        (sanity_section, "sanity_summary.csv"),
    ):
        built = build(runs, out)
        if built is not None:
            sections.append(built[0])
            write_csv(built[1], out / name)
    return sections
