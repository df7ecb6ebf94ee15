"""The parts of report.md: each builds its table or figure from the runs and computes its line of reading."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from citylens.core.run_folder import RunStatus
from citylens.explain.store import data_difference
from citylens.figures import explainer_grid, save
from citylens.pipeline.masks import sample_indices
from citylens.pipeline.runs import Run, city_index, planted_objects
from citylens.report import markdown as md
from citylens.report import sweep_figures
from citylens.report.examples import Views, collect, load_views
from citylens.report.tables import CONCEPT_COMPARISON, IMPORTANCE_COMPARISON, tsne_purity


@dataclass
class Section:
    """One part of report.md: a heading, its computed reading, a Markdown body and an optional figure."""

    title: str
    reading: str
    body: str = ""
    figure: str | None = None

    def render(self) -> str:
        reading = self.reading[:1].upper() + self.reading[1:]
        parts = [f"## {self.title}", f"**Reading:** {reading}"]
        if self.body:
            parts.append(self.body)
        if self.figure:
            parts.append(f"![{self.title}]({self.figure})")
        return "\n\n".join(parts)


def runs_section(runs: Sequence[Run], ignored: Mapping[str, RunStatus]) -> Section:
    """Which runs the report compares, with their test accuracy, and which it ignored and why."""
    table = pd.DataFrame(
        {
            "run": [r.name for r in runs],
            "label": [r.label for r in runs],
            "arch": [r.arch for r in runs],
            "seed": [r.seed for r in runs],
            "acc": [r.metrics.get("test/acc", float("nan")) for r in runs],
            "n_test": [len(r.store) for r in runs],
        }
    )
    body = (
        md.md_table(
            table,
            {
                "run": "run",
                "label": "label",
                "arch": "architecture",
                "seed": "seed",
                "acc": "test accuracy",
                "n_test": "test images",
            },
        )
        if runs
        else ""
    )
    if ignored:
        body += "\n\nIgnored runs:\n\n" + "\n".join(f"- `{name}`: {why}" for name, why in ignored.items())
    if runs:
        acc = table["acc"].astype(float)
        reading = (
            f"{len(runs)} finished runs ({table['arch'].nunique()} architectures), test accuracy "
            f"{md.fmt(acc.min())} to {md.fmt(acc.max())}"
        )
    else:
        reading = "No finished run in this sweep yet"
    reading += f"; {len(ignored)} ignored." if ignored else "."
    return Section("Runs", reading, body)


def group_tag(group: int | None) -> tuple[str, str]:
    """(title suffix, file suffix) of a data group's sections: empty when the sweep has one data group."""
    return ("", "") if group is None else (f" (data group {group})", f"_g{group}")


def groups_section(groups: Sequence[Sequence[Run]]) -> Section:
    """Which data groups the report formed: runs are compared only with runs of the same data."""
    reference = groups[0][0].store
    lines = []
    for k, group in enumerate(groups, 1):
        differs = data_difference(reference, group[0].store) if k > 1 else None
        how = f" ({differs.replace(': ', ' ', 1)} against group 1)" if differs else ""
        lines.append(f"- data group {k}{how}: " + ", ".join(f"`{r.name}`" for r in group))
    reading = (
        f"The runs used {len(groups)} different data settings, so they form {len(groups)} data groups; AR, "
        "Table 2 and the tests compare runs within a group only, never masks of different pictures."
    )
    return Section("Data groups", reading, "\n".join(lines))


def table2_sections(
    runs: Sequence[Run],
    per_pair: pd.DataFrame,
    grouped: pd.DataFrame,
    tests: pd.DataFrame,
    out: Path,
    group: int | None = None,
) -> list[Section]:
    """Table 2 (grouped, with the per-pair rows folded) and its heatmap, for one data group."""
    title, suffix = group_tag(group)
    if per_pair.empty:
        return [
            Section(
                f"Table 2: average residual between runs{title}",
                f"Table 2 needs two finished runs of the same data; "
                f"{'this sweep' if group is None else 'this group'} has {len(runs)}.",
            )
        ]
    shown = grouped.assign(ar_ci=[md.interval(r) for _, r in grouped.iterrows()])
    body = md.md_table(
        shown,
        {
            "pair": "pair",
            "n_pairs": "pairs of runs",
            "ar_ci": "AR [95% interval]",
            "seed_sd": "SD across seeds",
            "paper_ar": "paper",
        },
        digits=4,
    )
    pairs_md = md.md_table(
        per_pair.assign(ar_ci=[md.interval(r) for _, r in per_pair.iterrows()]),
        {"group": "group", "label_a": "run a", "label_b": "run b", "ar_ci": "AR [95% interval]"},
    )
    body += f"\n\n<details><summary>Every pair of runs (table2.csv)</summary>\n\n{pairs_md}\n\n</details>"
    body += (
        f"\n\nIntervals: {md.INTERVAL_WORDS} (a bootstrap that draws test places, e.g. panoramas, with all "
        "their views). They do not include the variation of another training run; the SD across seeds (the "
        "standard deviation of a group's per-pair AR, where a group has several pairs of runs) shows that."
    )
    ar_test = tests.iloc[0]
    reading = md.reading_comparison(ar_test, "masks", "AR", len(runs)) + " " + md.reading_table2(grouped)
    figure = save(
        sweep_figures.ar_heatmap([r.label for r in runs], [r.arch for r in runs], per_pair),
        out / f"table2_heatmap{suffix}.png",
    )
    return [
        Section(f"Table 2: average residual between runs{title}", reading, body),
        Section(f"Table 2 as a heatmap{title}", md.reading_heatmap(per_pair), figure=figure.name),
    ]


def stats_section(tests: pd.DataFrame, n_runs: int, group: int | None = None) -> Section:
    """The tests over run relabellings of architecture vs seed differences: AR (primary), ratio profiles."""
    ps = {k: [md.p_text(p) if np.isfinite(p) else "–" for p in tests[k]] for k in ("p_value", "p_adjusted")}
    body = md.md_table(
        tests.assign(p=ps["p_value"], p_holm=ps["p_adjusted"], role=tests["primary"].map(md.role)),
        {
            "comparison": "measure",
            "role": "test",
            "between_mean": "between architectures",
            "within_mean": "between seeds",
            "n_between": "architecture pairs",
            "n_within": "seed pairs",
            "n_relabellings": "relabellings",
            "p": "p (one-sided)",
            "p_holm": "p (Holm)",
        },
    )
    reading = md.reading_comparison(tests.iloc[1], "object-ratio profiles", "L1 distance", n_runs)
    others = {IMPORTANCE_COMPARISON: ("object-importance rankings", "1 - rho"),
              CONCEPT_COMPARISON: ("matched concepts", "1 - correlation")}  # fmt: skip
    for row in tests.iloc[3:].itertuples(index=False):
        more = md.reading_comparison(pd.Series(row._asdict()), *others[row.comparison], n_runs)
        reading += " " + more[:1].upper() + more[1:]
    concept_words = (
        "; the concept one, 1 - the matched concepts' correlation of per-image strength"
        if CONCEPT_COMPARISON in set(tests["comparison"])
        else ""
    )
    note = (
        "Null hypothesis: the runs are exchangeable, i.e. which architecture a run has does not change "
        "how far apart its explanations are. The test relabels the runs, not the pairs: every distinct "
        "assignment of the architecture labels to the runs (105 for 4 architectures x 2 seeds; a seeded "
        "random sample above 10,000), the statistic (mean distance of cross-architecture pairs minus "
        "same-architecture pairs) recomputed from the run x run matrix each time; p = share at least as "
        "extreme, the observed one included. AR is the primary test; the ratio-profile tests (and the "
        "object-importance one, 1 - Spearman rho of two runs' rankings of the headline statistic, where it "
        f"was computed{concept_words}) are secondary, their p Holm-adjusted. "
        f"Table 2's intervals: {md.INTERVAL_WORDS}."
    )
    title = f"Statistics: do architectures differ more than seeds?{group_tag(group)[0]}"
    return Section(title, reading, body + "\n\n" + note)


def fig3_section(runs: Sequence[Run], out: Path) -> Section:
    """Figure 3 for every run in one grid, with each map's city purity."""
    panels, purity = [], {}
    for run in runs:
        tsne = run.table("tsne.csv")
        if tsne is None:
            continue
        purity[run.label] = tsne_purity(tsne)
        coords = tsne[["x", "y"]].to_numpy(dtype=np.float64)
        panels.append(
            (
                run.arch,
                f"{run.label} (purity {md.fmt(purity[run.label], 2)})",
                coords,
                city_index(run, tsne["city"]),
                run.city_names,
            )
        )
    if not panels:
        return Section("Figure 3: t-SNE of the masks, every run", "No run has a t-SNE map (tsne.csv).")
    figure = save(sweep_figures.tsne_grid(panels), out / "fig3_tsne_runs.png")
    return Section("Figure 3: t-SNE of the masks, every run", md.reading_tsne(purity), figure=figure.name)


def fig5_section(runs: Sequence[Run], threshold: float, out: Path, spread: pd.DataFrame) -> Section:
    """Figure 5 across runs at the main threshold, with each city's top object per run and the spread of
    R across seeds (`spread`, from tables.ratio_spread) for the planted and the top objects."""
    title = f"Figure 5: object ratios of every run (threshold {threshold})"
    with_ratios = [r for r in runs if r.table("object_ratios.csv") is not None]
    tables = [r.table("object_ratios.csv") for r in with_ratios]
    tables = [t[np.isclose(t["threshold"], threshold)] for t in tables]
    if not with_ratios or not any(t["kept"].any() for t in tables):
        return Section(title, md.reading_ratios({}))
    top: dict[str, list[str]] = {}
    for t in tables:
        for city, rows in t[t["kept"]].groupby("city"):
            top.setdefault(city, []).append(
                rows.sort_values(["ratio", "object"], ascending=[False, True])["object"].iloc[0]
            )
    fig = sweep_figures.ratio_bars_runs(
        tables,
        [r.label for r in with_ratios],
        [r.arch for r in with_ratios],
        planted_objects(runs),
        title=title.split(": ", 1)[1].capitalize(),
    )
    shown = spread_rows(spread, planted_objects(runs))
    reading = " ".join(part for part in (md.reading_ratios(top), md.reading_spread(shown)) if part)
    body = md.spread_table(shown) if len(shown) else ""
    return Section(title, reading, body, figure=save(fig, out / "fig5_ratios_runs.png").name)


def spread_rows(spread: pd.DataFrame, planted: dict[str, list[str]]) -> pd.DataFrame:
    """The rows of `spread` worth a table: per data group and city the planted objects and the object with
    the highest mean R over architectures."""
    keep = []
    for (_, city), rows in spread.groupby(["data_group", "city"], sort=True):
        by_mean = rows.groupby("object")["mean"].mean().sort_values(ascending=False, kind="stable")
        chosen = set(planted.get(city, [])) | {by_mean.index[0]}
        keep.append(rows[rows["object"].isin(chosen)])
    return pd.concat(keep, ignore_index=True) if keep else spread.iloc[:0]


def fig6_section(
    runs: Sequence[Run],
    pair_matrix: np.ndarray | None,
    per_city: int,
    seed: int,
    out: Path,
    group: int | None = None,
    views: Views | None = None,
) -> Section:
    """Figure 6 across the runs of one data group: the same sample test images (their views read through
    `views`; None: masks alone), one column per run."""
    title, suffix = group_tag(group)
    ex = collect(runs, per_city, seed, views)
    spread = pair_matrix[:, ex.indices].mean(axis=0) if pair_matrix is not None else []
    fig = sweep_figures.examples_runs(ex.images, ex.masks, [r.label for r in runs], ex.row_titles, ex.notes)
    reading = md.reading_examples(ex.agree, len(ex.indices), list(spread), ex.short_ids)
    if ex.images is None:
        reading += " (The data views were not found, so the masks are drawn alone.)"
    return Section(
        f"Figure 6: the same test images, every run{title}",
        reading,
        figure=save(fig, out / f"fig6_examples_runs{suffix}.png").name,
    )


def recovery_section(recovery: pd.DataFrame) -> Section:
    """Planted-object recovery per run at the main threshold."""
    body = md.md_table(
        recovery,
        {
            "label": "run",
            "city": "city",
            "k": "k",
            "n_kept": "kept objects",
            "precision_at_k": "P@k",
            "separated": "separated",
            "ranks": "planted objects' ranks",
        },
    )
    return Section("Planted-object recovery (synthetic data)", md.reading_recovery(recovery), body)


def variants_section(table: pd.DataFrame, primary: str) -> Section:
    """Every analysis variant of the sweep side by side, one row per (architecture, variant)."""
    body = md.md_table(
        table,
        {
            "arch": "architecture",
            "explainer": "explainer",
            "layer": "layer",
            "target": "target",
            "images": "images",
            "threshold": "threshold",
            "n_runs": "runs",
            "planted_p_at_k": "planted P@k",
            "ar_seeds": "AR between seeds",
            "tsne_purity": "t-SNE purity",
        },
    )
    n = table["variant"].nunique()
    reading = f"{n} analysis variant{'s' if n != 1 else ''}; the sections above use `{primary}`"
    scored = table.dropna(subset=["planted_p_at_k"])
    if len(scored):
        best = scored.loc[scored["planted_p_at_k"].idxmax()]
        reading += (
            f"; the highest planted-object P@k is {md.fmt(float(best['planted_p_at_k']), 2)} "
            f"({best['arch']}, {best['explainer']} at {best['layer']}, threshold {best['threshold']:g})"
        )
    return Section("Analysis variants", reading + ".", body)


def misclassified_section(table: pd.DataFrame) -> Section:
    """How many test images of each city each run misclassified (their masks explain the true city)."""
    wide = table.pivot_table(index="label", columns="city", values="misclassified", aggfunc="sum", sort=False)
    wide = wide.reset_index()
    body = md.md_table(wide, {c: ("run" if c == "label" else f"{c} misclassified") for c in wide.columns})
    total, n = int(table["misclassified"].sum()), int(table["n_images"].sum())
    reading = f"{total} of {n} test images (summed over runs) are misclassified"
    return Section("Misclassified test images", reading + ".", body)


def explainers_section(
    variant_runs: dict[str, Sequence[Run]], views: Views | None, per_city: int, seed: int, out: Path
) -> Section | None:
    """One image, every explainer: the first run that holds several variants, its sample test images
    (rows) under each variant's mask (columns). None when no run holds two variants."""
    by_path: dict[Path, list[Run]] = {}
    for runs in variant_runs.values():
        for run in runs:
            by_path.setdefault(run.path, []).append(run)
    several = next((rs for rs in by_path.values() if len(rs) > 1), None)
    if several is None:
        return None
    first = several[0]
    idx = sample_indices(first.store.targets, per_city, seed)
    thresholds = {r.settings.threshold for r in several}
    columns = {}
    for run in several:
        s = run.settings
        name = f"{s.explainer} @ {s.layer}" + (f" t{s.threshold:g}" if len(thresholds) > 1 else "")
        name += "" if s.target == "label" else " (pred)"
        columns[name] = np.concatenate([run.store.masks(j, j + 1).numpy() for j in idx])
    size = first.store.size
    images = load_views(views, first, [first.store.image_ids[j] for j in idx])
    if images is None:
        images = np.zeros((len(idx), size, size, 3), np.uint8)
    titles = [f"{first.store.cities[j]}\n{first.store.image_ids[j].rsplit('/', 1)[-1]}" for j in idx]
    fig = explainer_grid(images, columns, titles, first.settings.threshold, f"{first.label}: every variant")
    reading = (
        f"{first.label}: {len(columns)} variants side by side on {len(idx)} sample test images "
        f"({', '.join(columns)})"
    )
    return Section(
        "One image, every explainer", reading + ".", figure=save(fig, out / "fig_explainers.png").name
    )
