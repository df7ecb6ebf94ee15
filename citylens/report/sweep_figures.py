"""Figures across the runs of a sweep: the Table 2 heatmap; Figures 3, 5, 6 with a panel/bar/column per run.

Runs are drawn in architecture order with the seeds of one architecture side by side, each architecture in
one hue and its seeds in shades of it, so retrained twins read as a family.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from citylens.analysis.sanity import SANITY_FLAG_RHO
from citylens.explain.explanation import overlay
from citylens.figures import CITY_COLOURS, subplots, tsne_scatter

ARCH_COLOURS = colormaps["Set1"].colors


def run_colours(archs: Sequence[str]) -> list[tuple[float, float, float]]:
    """One hue per architecture (order of appearance), lighter shades for its later seeds."""
    order = list(dict.fromkeys(archs))
    seen: dict[str, int] = {}
    colours = []
    for arch in archs:
        count = archs.count(arch)
        i = seen[arch] = seen.get(arch, -1) + 1
        base = np.array(to_rgb(ARCH_COLOURS[order.index(arch) % len(ARCH_COLOURS)]))
        mix = 0.55 * i / max(1, count - 1)
        colours.append(tuple(base * (1 - mix) + mix))
    return colours


def ar_heatmap(labels: Sequence[str], archs: Sequence[str], pairs: pd.DataFrame, title: str = "") -> Figure:
    """Table 2 as a run x run heatmap of AR, annotated; lines separate the architectures.

    The colour scale spans the observed ARs (not 0..1), so that small differences between pairs show.
    """
    n = len(labels)
    index = {label: i for i, label in enumerate(labels)}
    grid = np.full((n, n), np.nan)
    for row in pairs.itertuples():
        i, j = index[row.label_a], index[row.label_b]
        grid[i, j] = grid[j, i] = row.ar
    side = max(4.0, 0.75 * n + 2.0)
    fig, ax = subplots(figsize=(side + 1.2, side))
    finite = grid[np.isfinite(grid)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    low, high = (low - 0.01, high + 0.01) if high - low < 0.02 else (low, high)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=low, vmax=high)
    for i, j in zip(*np.nonzero(np.isfinite(grid))):
        dark = grid[i, j] < (low + high) / 2
        ax.text(
            j,
            i,
            f"{grid[i, j]:.3f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if dark else "black",
        )
    for k in range(1, n):
        if archs[k] != archs[k - 1]:
            ax.axhline(k - 0.5, color="white", lw=2)
            ax.axvline(k - 0.5, color="white", lw=2)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), labels, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="average residual AR")
    ax.set_title(title or "Average residual between runs (Table 2)", fontsize=10)
    fig.tight_layout()
    return fig


def tsne_grid(
    panels: Sequence[tuple[str, str, np.ndarray, np.ndarray, Sequence[str]]], title: str = ""
) -> Figure:
    """Figure 3 for every run: one t-SNE panel per run, a row per architecture, a column per seed.

    `panels` holds (arch, panel title, (N, 2) coords, (N,) city indices, city names) in run order.
    """
    archs = list(dict.fromkeys(p[0] for p in panels))
    rows = [[p for p in panels if p[0] == arch] for arch in archs]
    ncols = max(len(r) for r in rows)
    fig, axes = subplots(len(rows), ncols, figsize=(3.6 * ncols, 3.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(row):
                ax.axis("off")
                continue
            _, name, coords, cities, city_names = row[c]
            tsne_scatter(coords, cities, city_names, title=name, ax=ax)
            ax.title.set_fontsize(9)
            legend = ax.get_legend()
            if legend is not None and (r, c) != (0, 0):
                legend.remove()
    fig.suptitle(title or "t-SNE of the Grad-CAM masks, every run (Figure 3)", fontsize=11)
    fig.tight_layout()
    return fig


def _objects_for(kept: pd.DataFrame, city: str, max_objects: int, planted: Sequence[str]) -> list[str]:
    """The city's kept objects with the highest mean R over runs; planted ones are always shown."""
    rows = kept[kept["city"] == city]
    mean = rows.groupby("object")["ratio"].mean().sort_values(ascending=False)
    extra = [o for o in mean.index[max_objects:] if o in planted]
    chosen = set(mean.index[: max(0, max_objects - len(extra))]) | set(extra)
    return [o for o in mean.index if o in chosen]


def ratio_bars_runs(
    tables: Sequence[pd.DataFrame],
    labels: Sequence[str],
    archs: Sequence[str],
    planted: dict[str, list[str]] | None = None,
    max_objects: int = 12,
    title: str = "",
    value_label: str = "R (explained / all px)",
) -> Figure:
    """Figure 5 across runs: per city a panel of grouped bars, R per kept object, one bar per run.

    Objects are those any run keeps, ordered by their mean R over runs (the first `max_objects`, planted
    objects of synthetic data always among them, marked with a star). Each table holds one run's rows at one
    threshold. Another per-object statistic can be drawn in the `ratio` column, named by `value_label`; the
    axis spans [0, 1] while the values do, else it follows them with a line at zero (signed attributions).
    """
    stacked = pd.concat([t.assign(run=i) for i, t in enumerate(tables)], ignore_index=True)
    kept = stacked[stacked["kept"]]
    cities = sorted(kept["city"].unique())
    colours = run_colours(list(archs))
    n_runs = len(tables)
    width = 0.8 / max(1, n_runs)
    panel_width = max(6.0, min(18.0, 0.35 * n_runs * max_objects * 0.5 + 2))
    fig, axes = subplots(
        max(1, len(cities)),
        1,
        figsize=(panel_width, 3.4 * max(1, len(cities)) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    for ax, city in zip(axes[:, 0], cities):
        objects = _objects_for(kept, city, max_objects, (planted or {}).get(city, []))
        x = np.arange(len(objects))
        for i in range(n_runs):
            rows = kept[(kept["run"] == i) & (kept["city"] == city)].set_index("object")["ratio"]
            values = rows.reindex(objects).fillna(0.0).to_numpy()
            ax.bar(x - 0.4 + (i + 0.5) * width, values, width, color=colours[i], edgecolor="white", lw=0.3)
        names = [f"{o} *" if o in (planted or {}).get(city, []) else o for o in objects]
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=9)
        if kept["ratio"].between(0, 1).all():
            ax.set_ylim(0, 1)
        else:
            ax.axhline(0, color="black", lw=0.6)
        ax.set_ylabel(value_label)
        ax.set_title(city + ("   (* planted cue)" if planted and city in planted else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=c, label=label) for c, label in zip(colours, labels)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, title="run")
    fig.suptitle(title or "Object ratios of every run (Figure 5)", fontsize=11)
    return fig


def examples_runs(
    images: np.ndarray | None,
    masks: np.ndarray,
    labels: Sequence[str],
    row_titles: Sequence[str],
    notes: np.ndarray,
    title: str = "",
) -> Figure:
    """Figure 6 across runs: a row per sample test image, the image then one column per run, mask overlaid.

    `masks` is (runs, images, S, S); `notes[r, i]` is the text under run r's panel of image i (prediction).
    Without `images` (the data is gone) the masks are drawn alone.
    """
    n_runs, n_images = masks.shape[:2]
    offset = 1 if images is not None else 0
    ncols = n_runs + offset
    fig, axes = subplots(n_images, ncols, figsize=(1.9 * ncols, 2.1 * n_images), squeeze=False)
    for i in range(n_images):
        if images is not None:
            axes[i, 0].imshow(images[i])
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
        for r in range(n_runs):
            ax = axes[i, r + offset]
            panel = overlay(images[i], masks[r, i]) if images is not None else masks[r, i]
            ax.imshow(panel, cmap=None if images is not None else "jet", vmin=0, vmax=1)
            ax.set_xlabel(notes[r, i], fontsize=7, labelpad=2)
            if images is None and r == 0:
                ax.set_ylabel(row_titles[i], fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    heads = (["image"] if images is not None else []) + list(labels)
    for ax, head in zip(axes[0], heads):
        ax.set_title(head, fontsize=9)
    fig.suptitle(title or "The same test images explained by every run (Figure 6)", fontsize=11)
    fig.tight_layout()
    return fig


def ratio_vs_effect(points: pd.DataFrame, archs: Sequence[str], method: str, title: str = "") -> Figure:
    """R against the causal effect, one point per (run, city, object), one panel per architecture.

    `points` holds arch, label, city, object, ratio, effect and planted (bool); cities have one colour each,
    planted objects are drawn as stars and named. A faithful explanation puts the points on a rising line.
    """
    panels = [a for a in archs if a in set(points["arch"])]
    cities = sorted(points["city"].unique())
    fig, axes = subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, arch in zip(axes[0], panels):
        mine = points[points["arch"] == arch]
        for c, city in enumerate(cities):
            colour = CITY_COLOURS[c % len(CITY_COLOURS)]
            for planted, marker, size in ((False, "o", 22), (True, "*", 110)):
                rows = mine[(mine["city"] == city) & (mine["planted"] == planted)]
                ax.scatter(
                    rows["effect"],
                    rows["ratio"],
                    s=size,
                    marker=marker,
                    color=colour,
                    alpha=0.75,
                    edgecolors="black" if planted else "none",
                    linewidths=0.5,
                    label=f"{city}{' (planted)' if planted else ''}" if len(rows) else None,
                )
            named = mine[(mine["city"] == city) & mine["planted"]].drop_duplicates("object")
            for obj, row in named.set_index("object").iterrows():
                ax.annotate(
                    obj, (row["effect"], row["ratio"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
                )
        ax.axvline(0, color="grey", lw=0.6, ls="--")
        ax.set_xlabel(f"causal effect ({method})")
        ax.set_title(f"{arch} ({mine['label'].nunique()} runs)", fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("R (explained / all px)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    fig.supxlabel("effect = drop of P(true city) when the object is removed", fontsize=9)
    fig.suptitle(title or "Object ratio against causal effect", fontsize=11)
    return fig


def sanity_cascade(summary: pd.DataFrame, archs: Sequence[str], title: str = "") -> Figure:
    """The randomisation test: rho per step (none, cascade top-down, full), one panel per architecture,
    one line per explainer with the range over seeds shaded."""
    panels = [a for a in archs if a in set(summary["arch"])]
    fig, axes = subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True, layout="constrained"
    )
    for ax, arch in zip(axes[0], panels):
        mine = summary[summary["arch"] == arch]
        for i, (explainer, rows) in enumerate(mine.groupby("explainer", sort=False)):
            rows = rows.sort_values("step")
            colour = ARCH_COLOURS[i % len(ARCH_COLOURS)]
            ax.plot(rows["step"], rows["spearman"], marker="o", color=colour, label=explainer)
            ax.fill_between(rows["step"], rows["spearman_min"], rows["spearman_max"], color=colour, alpha=0.2)
            ax.set_xticks(rows["step"], rows["step_name"], rotation=60, ha="right", fontsize=7)
        ax.axhline(SANITY_FLAG_RHO, color="grey", lw=0.6, ls="--")
        ax.set_ylim(-1, 1.05)
        ax.set_title(arch, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean Spearman rho, trained vs random")
    axes[0, 0].legend(fontsize=8, frameon=False)
    fig.suptitle(title or "Model parameter randomisation (Adebayo et al. 2018)", fontsize=11)
    return fig
