"""Figures of the paper, as plain functions on arrays that return matplotlib figures.

Figure 3: t-SNE of the masks coloured by city. Figure 4: explanations drawn at their t-SNE places.
Figure 5: object ratios R_p^c per city. Figure 6: sample images with their masks and explanations.
`explainer_grid`: the same images under every explainer (and layer) of one run, side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.ticker import MaxNLocator

from citylens.core.io import atomic_path  # noqa: E402
from citylens.explain.explanation import explain, overlay, validate_threshold  # noqa: E402

CITY_COLOURS = colormaps["tab10"].colors


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    figsize: tuple[float, float] | None = None,
    layout: str | None = None,
    **kw: Any,
) -> tuple[Figure, Any]:
    """A figure and its axes like pyplot.subplots, without pyplot: no backend is switched, no global state."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def save(fig: Figure, path: Path | str, dpi: int = 120, tight: bool = True) -> Path:
    """Save a figure atomically as PNG; `tight=False` keeps the figure's own size in pixels."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None, format="png")
    return Path(path)


def tsne_scatter(
    coords: np.ndarray, cities: Sequence[int], city_names: Sequence[str], title: str = "", ax: Axes = None
) -> Figure:
    """Figure 3: the 2-D map of the masks, one colour per city."""
    fig = ax.figure if ax is not None else Figure(figsize=(6, 5.5))
    ax = ax or fig.add_subplot()
    cities = np.asarray(cities)
    size = max(2.0, min(20.0, 4000 / max(1, len(coords))))
    for c, name in enumerate(city_names):
        pts = coords[cities == c]
        ax.scatter(
            pts[:, 0], pts[:, 1], s=size, alpha=0.7, color=CITY_COLOURS[c % 10], label=f"{name} ({len(pts)})"
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of Grad-CAM masks (Figure 3)")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    return fig


def tsne_thumbnails(
    coords: np.ndarray,
    thumbnails: np.ndarray,
    cities: Sequence[int],
    city_names: Sequence[str],
    title: str = "",
) -> Figure:
    """Figure 4: visual explanations as thumbnails at their t-SNE places, framed in their city's colour."""
    fig, ax = subplots(figsize=(12, 12))
    ax.scatter(coords[:, 0], coords[:, 1], s=0)
    zoom = 40 / max(thumbnails.shape[1], 1)
    for (x, y), thumb, c in zip(coords, thumbnails, cities, strict=True):
        box = AnnotationBbox(
            OffsetImage(thumb, zoom=zoom),
            (x, y),
            frameon=True,
            pad=0.05,
            bboxprops={"edgecolor": CITY_COLOURS[int(c) % 10], "linewidth": 1.5},
        )
        ax.add_artist(box)
    handles = [Line2D([], [], color=CITY_COLOURS[i % 10], lw=3, label=n) for i, n in enumerate(city_names)]
    ax.legend(handles=handles, loc="upper right")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(coords)} visual explanations at their t-SNE places (Figure 4)")
    return fig


def example_grid(
    images: np.ndarray, masks: np.ndarray, threshold: float, row_titles: Sequence[str], title: str = ""
) -> Figure:
    """Figure 6 for one model: per sample image, the image, its mask overlaid, and its explanation."""
    n = len(images)
    fig, axes = subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    explained = explain(images, masks, threshold)
    for i in range(n):
        panels = (images[i], overlay(images[i], masks[i]), explained[i])
        for j, (panel, name) in enumerate(
            zip(panels, ("image", "Grad-CAM mask", f"explanation (>= {threshold})"))
        ):
            axes[i, j].imshow(panel)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    fig.suptitle(title or "Sample test images (Figure 6)", fontsize=10)
    fig.tight_layout()
    return fig


# explainer_grid's layout, in inches: one square panel per cell, a band on top for the title.
GRID_PANEL = 1.8
GRID_TITLE = 0.6


def explainer_grid(
    images: np.ndarray,
    masks_by_column: dict[str, np.ndarray],
    titles: Sequence[str],
    threshold: float,
    title: str = "",
) -> Figure:
    """One run's test images (rows) under every explainer/layer (columns), like Figure 6's overlays.

    Column 0 is the image, then one mask overlay per key of `masks_by_column` (its column heading),
    with the explanation's border (mask = `threshold`) drawn in white. `images` is (N, H, W, 3) uint8,
    each mask array (N, H, W) in [0, 1], `titles` one row label per image. The figure is
    (1 + columns) x GRID_PANEL by N x GRID_PANEL + GRID_TITLE inches.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if not masks_by_column:
        raise ValueError("masks_by_column is empty: give at least one explainer's masks")
    n, height, width = images.shape[:3]
    for name, masks in masks_by_column.items():
        if np.shape(masks) != (n, height, width):
            raise ValueError(
                f"masks_by_column[{name!r}]: shape {np.shape(masks)} does not match the images' "
                f"{(n, height, width)}"
            )
    if len(titles) != n:
        raise ValueError(f"titles: {len(titles)} row titles for {n} images")
    threshold = validate_threshold(threshold)
    cols = 1 + len(masks_by_column)
    fig_height = n * GRID_PANEL + GRID_TITLE
    fig, axes = subplots(n, cols, figsize=(cols * GRID_PANEL, fig_height), squeeze=False)
    fig.subplots_adjust(
        left=0.02, right=0.98, bottom=0.02, top=1 - GRID_TITLE / fig_height, wspace=0.05, hspace=0.15
    )
    headings = ["image", *masks_by_column]
    for i in range(n):
        axes[i, 0].imshow(images[i])
        for j, masks in enumerate(masks_by_column.values(), start=1):
            mask = np.asarray(masks[i], dtype=np.float32)
            axes[i, j].imshow(overlay(images[i], mask))
            if mask.min() < threshold <= mask.max():
                axes[i, j].contour(mask, levels=[threshold], colors="white", linewidths=0.8)
        for j in range(cols):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(headings[j], fontsize=8)
        axes[i, 0].set_ylabel(titles[i], fontsize=7)
    fig.suptitle(title or f"One image, every explainer (border: mask = {threshold})", fontsize=10)
    return fig


def ratio_bars(
    table: pd.DataFrame,
    title: str = "",
    max_objects: int = 15,
    planted: dict[str, list[str]] | None = None,
    recovery: pd.DataFrame | None = None,
    value: str = "ratio",
    xlabel: str = "R (explained / all pixels of the object)",
) -> Figure:
    """Figure 5 for one run: bars of R_p^c for the kept objects, one panel per city, sorted.

    With `planted` (synthetic data) the planted objects' bars are drawn black and the panel title gives the
    recovery precision@k from `recovery` (both tables at one threshold). `value` names another per-object
    column to draw (the object attribution A_p^c, `attribution`): drawn signed, with a line at zero and, when
    the table has `ci_low`/`ci_high`, their 95% intervals as whiskers, whatever range its values fall in.
    """
    kept = table[table["kept"]]
    cities = sorted(kept["city"].unique())
    signed = value != "ratio"  # R lies in [0, 1]; any other statistic is drawn signed, about zero
    whiskers = signed and {"ci_low", "ci_high"} <= set(kept.columns)
    fig, axes = subplots(1, max(1, len(cities)), figsize=(4.5 * max(1, len(cities)), 4.5), squeeze=False)
    for ax, city in zip(axes[0], cities):
        rows = kept[kept["city"] == city].sort_values(value, ascending=False).head(max_objects)[::-1]
        colour = CITY_COLOURS[cities.index(city) % 10]
        is_planted = rows["object"].isin((planted or {}).get(city, []))
        error = None
        if whiskers:
            error = np.stack([rows[value] - rows["ci_low"], rows["ci_high"] - rows[value]]).clip(0)
        colours = ["black" if p else colour for p in is_planted]
        ax.barh(rows["object"], rows[value], color=colours, xerr=error, ecolor="grey", capsize=2)
        if signed:
            ax.axvline(0, color="black", lw=0.6)
            ax.xaxis.set_major_locator(MaxNLocator(5))
        else:
            ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel)
        label = city
        if recovery is not None and planted and city in planted:
            at = recovery[recovery["city"] == city]
            if len(at):
                label += f"  (planted in black; P@{at['k'].iloc[0]} = {at['precision_at_k'].iloc[0]:.2f})"
        ax.set_title(label, fontsize=9)
    fig.suptitle(title or "Object ratios (Figure 5)")
    fig.tight_layout()
    return fig


def concept_rows(images: np.ndarray, maps: np.ndarray, row_titles: Sequence[str], title: str = "") -> Figure:
    """The visual elements of one city: one row per concept, its strongest test images with the concept's
    map over them (images (rows, n, H, W, 3) uint8, maps (rows, n, H, W) scaled to [0, 1] per row)."""
    rows, n = images.shape[:2]
    fig, axes = subplots(rows, n, figsize=(1.6 * n, 1.8 * rows), squeeze=False)
    for r in range(rows):
        for i in range(n):
            axes[r, i].imshow(overlay(images[r, i], maps[r, i], alpha=0.45))
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(row_titles[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
