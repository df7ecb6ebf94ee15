"""Figure 6 across runs: the same sample test images, their views from the data cache, every run's masks.

The views come from the data module re-created from the run's recorded overrides on citylens' own config
files (citylens.config.run_config: overrides naming code are refused, nothing saved in the run folder is
instantiated), the same images the run's Grad-CAM saw. The data cache folder is looked up where the run had
it; when the data is gone the figure shows the masks alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from citylens.config import run_config
from citylens.pipeline.masks import sample_indices
from citylens.report.runs import Run

log = logging.getLogger("citylens.report")


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


def _cache_dir(run: Run, configured: str) -> str:
    """The run's data cache folder: as configured, else relative to the run's working dir, else the synthetic
    data's parent folder recorded in the store."""
    candidates = [Path(configured).expanduser()]
    hydra_yaml = run.path / ".hydra" / "hydra.yaml"
    if not candidates[0].is_absolute() and hydra_yaml.is_file():
        cwd = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd", default=None)
        if cwd:
            candidates.insert(0, Path(cwd) / configured)
    root = (run.store.meta.get("dataset") or {}).get("root")
    if root:
        candidates.append(Path(root).parent)
    return str(next((c for c in candidates if c.is_dir()), candidates[0]))


def view_reader(run: Run) -> Callable[[Sequence[str]], np.ndarray] | None:
    """A reader of the run's analysis views by image id (uint8 (n, S, S, 3)), or None (with a warning) if the
    data is unavailable. The data module is set up once, so a caller reading many chunks pays for it once."""
    saved = run.path / ".hydra" / "config.yaml"
    try:
        recorded = OmegaConf.load(saved) if saved.is_file() else OmegaConf.create()
        configured = OmegaConf.select(recorded, "data.cache_dir", default="data_cache")
        cfg = run_config(run.path, [])
        cfg.data.cache_dir = _cache_dir(run, str(configured))
        datamodule = instantiate(cfg.data)
        datamodule.setup("test")
        views, row = datamodule.cache.images(), datamodule.row
    except Exception as err:  # any failure costs only the background images, not the report
        log.warning("no images for %s (%s: %s); drawing the masks alone", run.name, type(err).__name__, err)
        return None
    return lambda image_ids: np.stack([np.asarray(views[row[i]]) for i in image_ids])


def load_views(run: Run, image_ids: Sequence[str]) -> np.ndarray | None:
    """uint8 (n, S, S, 3) analysis views of the given test images, or None (with a warning) if unavailable."""
    reader = view_reader(run)
    try:
        return reader(image_ids) if reader is not None else None
    except KeyError as err:
        log.warning("no image for %s: %s is not in its data; drawing the masks alone", run.name, err)
        return None


def collect(runs: Sequence[Run], per_city: int, seed: int = 0, with_images: bool = True) -> Examples:
    """The sample images of `sample_indices` (fixed by the split) with every run's mask and prediction."""
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
    images = load_views(first, [first.store.image_ids[j] for j in idx]) if with_images and len(idx) else None
    agree = int(sum(len(set(preds[:, k])) == 1 for k in range(len(idx))))
    return Examples(idx, images, masks, notes, titles, short, agree)
