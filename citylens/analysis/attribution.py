"""Object attribution A_p^c: how much an attribution explainer credits object p for city c.

See docs/explainers.md, "Object attribution".

Per test image i and ADE20K object p in its label map, a_{p,i} is the signed sum of the attribution map over
p's pixels (pixel explainers: the map splits log P(target) over the pixels, so an object's share is the sum
of its pixels' shares) or the mean (object explainers: every pixel of p holds p's value, so the mean is the
value). A_p^c is the mean of a_{p,i} over city c's images containing p; its 95% interval resamples test
places with all their images (`ratio_ci` of per-place sums over per-place image counts, docs/statistics.md).
Objects are kept as for R_p^c: where their average pixel count per image of the city exceeds
`min_mean_pixels`. Absolute values are not taken: the sign says whether the object speaks for the city.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from citylens.analysis.ratios import N_CLASSES
from citylens.analysis.stats import group_index, ratio_ci
from citylens.core.ade20k import ADE20K_CLASSES, UNLABELLED

ATTRIBUTION_FILE = "object_attribution.csv"
STATISTICS = ("sum", "mean")
TABLE_COLUMNS = [
    "city",
    "object",
    "object_id",
    "n_images",
    "attribution",
    "ci_low",
    "ci_high",
    "mean_pixels",
    "kept",
]


def object_values(
    maps: np.ndarray | torch.Tensor, label_maps: np.ndarray | torch.Tensor, statistic: str = "sum"
) -> tuple[np.ndarray, np.ndarray]:
    """Per image and ADE20K class: the map's sum (or mean) over the class's pixels, and the pixel count.

    maps (n, H, W) float, label maps (n, H, W) ADE20K indices or 255 (unlabelled, left out) -> float64
    (n, N_CLASSES) values (0 where the class is absent) and int64 (n, N_CLASSES) counts.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: {statistic!r} is not one of {list(STATISTICS)}")
    m = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).double()
    lab = torch.as_tensor(np.asarray(label_maps) if not isinstance(label_maps, torch.Tensor) else label_maps)
    if m.ndim != 3 or tuple(m.shape) != tuple(lab.shape):
        raise ValueError(f"maps {tuple(m.shape)} and label maps {tuple(lab.shape)} must both be (N,H,W)")
    if lab.is_floating_point() or lab.dtype == torch.bool:
        raise ValueError(f"label maps must be integer class indices, got {lab.dtype}")
    lab = lab.long().to(m.device)
    if bool(((lab < 0) | ((lab >= N_CLASSES) & (lab != UNLABELLED))).any()):
        raise ValueError(f"label maps must hold 0..{N_CLASSES - 1} or {UNLABELLED} (unlabelled)")
    n = m.shape[0]
    key = (torch.arange(n, device=m.device)[:, None, None] * 256 + lab).reshape(-1)
    sums = torch.bincount(key, weights=m.reshape(-1), minlength=n * 256).reshape(n, 256)[:, :N_CLASSES]
    counts = torch.bincount(key, minlength=n * 256).reshape(n, 256)[:, :N_CLASSES]
    if statistic == "mean":
        sums = torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))
    return sums.cpu().numpy(), counts.cpu().numpy()


def attribution_table(
    values: np.ndarray,
    pixels: np.ndarray,
    cities: Sequence[str],
    places: Sequence[str] | None = None,
    min_mean_pixels: float = 100,
    n_boot: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """A_p^c per (city, object present in the city), cities sorted, objects by ADE20K index.

    values, pixels: `object_values` of the images (n, N_CLASSES); n_images = the city's images containing
    the object; mean_pixels = its pixels over the number of the city's images (as object_ratios);
    kept = mean_pixels > min_mean_pixels; ci_low, ci_high the interval over places when n_boot > 0 (places
    None: every image its own place), else NaN.
    """
    values, pixels = np.asarray(values, np.float64), np.asarray(pixels, np.int64)
    cities = np.asarray([str(c) for c in cities])
    if values.shape != pixels.shape or values.ndim != 2 or len(cities) != len(values):
        raise ValueError(f"values {values.shape}, pixels {pixels.shape} and {len(cities)} cities disagree")
    places = np.arange(len(cities)).astype(str) if places is None else np.asarray([str(p) for p in places])
    rows = []
    for city in sorted(set(cities)):
        mine = cities == city
        present = pixels[mine] > 0
        objects = np.flatnonzero(present.any(axis=0))
        unit = group_index(places[mine], int(mine.sum()))
        n_units = int(unit.max()) + 1 if len(unit) else 0
        # Per-place sums of a_{p,i} and per-place counts of images containing p: (objects, places).
        num = np.zeros((len(objects), n_units))
        den = np.zeros((len(objects), n_units))
        np.add.at(num.T, unit, np.where(present, values[mine], 0.0)[:, objects])
        np.add.at(den.T, unit, present[:, objects].astype(np.float64))
        low = high = np.full(len(objects), np.nan)
        if n_boot > 0 and len(objects):
            low, high = ratio_ci(num, den, n_boot, level, seed)
        mean_pixels = pixels[mine][:, objects].sum(axis=0) / mine.sum()
        rows.append(
            pd.DataFrame(
                {
                    "city": city,
                    "object": [ADE20K_CLASSES[p] for p in objects],
                    "object_id": objects,
                    "n_images": den.sum(axis=1).astype(np.int64),
                    "attribution": num.sum(axis=1) / den.sum(axis=1),
                    "ci_low": low,
                    "ci_high": high,
                    "mean_pixels": mean_pixels,
                    "kept": mean_pixels > min_mean_pixels,
                }
            )
        )
    if not rows:
        return pd.DataFrame({c: [] for c in TABLE_COLUMNS})
    return pd.concat(rows, ignore_index=True)[TABLE_COLUMNS]
