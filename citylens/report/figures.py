"""Figures of the paper, as plain functions on arrays that return matplotlib figures.

Figure 3: t-SNE of the masks coloured by city. Figure 4: explanations drawn at their t-SNE places.
Figure 5: object ratios R_p^c per city. Figure 6: sample images with their masks and explanations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402

from citylens.explain.explanation import explain, overlay  # noqa: E402
from citylens.io import atomic_path  # noqa: E402

CITY_COLOURS = plt.get_cmap("tab10").colors


def save(fig: Figure, path: Path | str, dpi: int = 120) -> Path:
    """Save a figure atomically as PNG and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def tsne_scatter(
    coords: np.ndarray, cities: Sequence[int], city_names: Sequence[str], title: str = "", ax: plt.Axes = None
) -> Figure:
    """Figure 3: the 2-D map of the masks, one colour per city."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(6, 5.5))
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
    fig, ax = plt.subplots(figsize=(12, 12))
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
    handles = [
        plt.Line2D([], [], color=CITY_COLOURS[i % 10], lw=3, label=n) for i, n in enumerate(city_names)
    ]
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
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
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


def ratio_bars(
    table: pd.DataFrame,
    title: str = "",
    max_objects: int = 15,
    planted: dict[str, list[str]] | None = None,
    recovery: pd.DataFrame | None = None,
) -> Figure:
    """Figure 5 for one run: bars of R_p^c for the kept objects, one panel per city, sorted.

    With `planted` (synthetic data) the planted objects' bars are drawn black and the panel title gives the
    recovery precision@k from `recovery` (both tables at one threshold).
    """
    kept = table[table["kept"]]
    cities = sorted(kept["city"].unique())
    fig, axes = plt.subplots(1, max(1, len(cities)), figsize=(4.5 * max(1, len(cities)), 4.5), squeeze=False)
    for ax, city in zip(axes[0], cities):
        rows = kept[kept["city"] == city].sort_values("ratio", ascending=False).head(max_objects)[::-1]
        colour = CITY_COLOURS[cities.index(city) % 10]
        is_planted = rows["object"].isin((planted or {}).get(city, []))
        ax.barh(rows["object"], rows["ratio"], color=["black" if p else colour for p in is_planted])
        ax.set_xlim(0, 1)
        ax.set_xlabel("R (explained / all pixels of the object)")
        label = city
        if recovery is not None and planted and city in planted:
            at = recovery[recovery["city"] == city]
            if len(at):
                label += f"  (planted in black; P@{at['k'].iloc[0]} = {at['precision_at_k'].iloc[0]:.2f})"
        ax.set_title(label, fontsize=9)
    fig.suptitle(title or "Object ratios (Figure 5)")
    fig.tight_layout()
    return fig
