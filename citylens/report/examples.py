"""Figure 6 across runs: the same sample test images, their views, every run's masks.

The views come from a `Views` callable given by the caller (the adapters pass
citylens.app.run_views.view_reader, which re-creates the run's data module from its recorded config);
without one, or when it finds no data, the figure shows the masks alone. Taking the reader as an
argument keeps the report below the config layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from citylens.pipeline.masks import sample_indices
from citylens.pipeline.runs import Run

log = logging.getLogger("citylens.report")

ViewReader = Callable[[Sequence[str]], np.ndarray]
"""Analysis views by image id: uint8 (n, S, S, 3)."""
Views = Callable[[Run], ViewReader | None]
"""A run's view reader, or None (with a warning) when its data is unavailable."""


@dataclass
class Examples:
    """What Figure 6 across runs draws: views (or None), masks (runs, images, S, S) and per-panel notes."""

    indices: np.ndarray
    images: np.ndarray | None
    masks: np.ndarray
    notes: np.ndarray
    row_titles: list[str]
    short_ids: list[str]
    agree: int


def load_views(views: Views | None, run: Run, image_ids: Sequence[str]) -> np.ndarray | None:
    """uint8 (n, S, S, 3) analysis views of the given test images through `views`, or None (with a warning
    if unavailable; without a warning when `views` is None)."""
    reader = views(run) if views is not None else None
    try:
        return reader(image_ids) if reader is not None else None
    except KeyError as err:
        log.warning("no image for %s: %s is not in its data; drawing the masks alone", run.name, err)
        return None


def collect(runs: Sequence[Run], per_city: int, seed: int = 0, views: Views | None = None) -> Examples:
    """The sample images of `sample_indices` (fixed by the split) with every run's mask and prediction, and
    their views read through `views` (None: no images)."""
    first = runs[0]
    idx = sample_indices(first.store.targets, per_city, seed)
    masks = np.stack([np.concatenate([r.store.masks(j, j + 1).numpy() for j in idx]) for r in runs])
    notes = np.empty((len(runs), len(idx)), dtype=object)
    preds = np.empty((len(runs), len(idx)), dtype=object)
    for r, run in enumerate(runs):
        for k, j in enumerate(idx):
            pred = run.city_names[int(run.store.preds[j])]
            preds[r, k] = pred
            mark = "" if pred == run.store.cities[j] else "  (wrong)"
            notes[r, k] = f"-> {pred} {float(run.store.probs[j].max()):.2f}{mark}"
    short = [first.store.image_ids[j].rsplit("/", 1)[-1] for j in idx]
    titles = [f"{first.store.cities[j]}\n{s}" for j, s in zip(idx, short)]
    images = load_views(views, first, [first.store.image_ids[j] for j in idx]) if len(idx) else None
    agree = int(sum(len(set(preds[:, k])) == 1 for k in range(len(idx))))
    return Examples(idx, images, masks, notes, titles, short, agree)
