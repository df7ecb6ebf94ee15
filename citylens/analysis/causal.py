"""Causal object importance: how much P(true city) drops when an object is taken out of an image.

Plain functions on arrays (docs/causal.md). A `Probe` is one test image with its variants, one per object
removed (a counterfactual rendering on synthetic data, or the object's pixels filled on real data);
`measure` runs every view through the network's `predict` in large batches and gives one row per (image,
object); `causal_table` averages them per (city, object) with bootstrap intervals; `causal_agreement`
compares two methods' tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from citylens.analysis.stats import bootstrap_ci
from citylens.core.view import surround_fill

METHODS = ("counterfactual", "deletion")
FILLS = ("mean", "blur", "surround")
TABLE_COLUMNS = ["city", "object", "n_images", "effect", "ci_low", "ci_high", "flip_rate", "method"]

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 (N, S, S, 3) analysis views -> (N, C) probabilities


@dataclass
class Probe:
    """One test image and its variants: `views[0]` is the image, `views[1 + k]` the image without
    `objects[k]`, made by `methods[k]`; all (S, S, 3) uint8 analysis views. One probe may hold the variants
    of several methods, so they share the image's forward pass."""

    image: int
    city: str
    target: int
    place: str
    objects: list[str]
    methods: list[str]
    views: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.views) == 1 + len(self.objects) == 1 + len(self.methods):
            raise ValueError(
                f"probe of image {self.image}: {len(self.views)} views for {len(self.objects)} objects "
                f"and {len(self.methods)} methods"
            )
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"probe of image {self.image}: unknown methods {sorted(unknown)}")


def check_fill(fill: str) -> str:
    """Reject an unknown deletion fill, naming the setting."""
    if fill not in FILLS:
        raise ValueError(f"fill: {fill!r} is not a deletion fill; choose one of {list(FILLS)}")
    return fill


def delete_objects(
    image: np.ndarray, masks: np.ndarray, fill: str = "mean", blur_sigma: float = 0.1
) -> np.ndarray:
    """The image once per mask with the mask's pixels filled: (K, H, W, 3) uint8 from (H, W, 3), (K, H, W).

    fill="mean": the image's mean colour; fill="blur": the image blurred by a Gaussian of `blur_sigma` times
    the image side (so the fill keeps the surroundings' colours but none of the object's shape);
    fill="surround": each mask's pixels from the colours around that mask (core.view.surround_fill at sigma =
    `blur_sigma` x side), so no silhouette of the object is left.
    """
    check_fill(fill)
    if image.ndim != 3 or masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"need an (H, W, 3) image and (K, H, W) masks, got {image.shape} and {masks.shape}")
    sigma = blur_sigma * max(image.shape[:2])
    if fill == "mean":
        filler = image.reshape(-1, 3).mean(0)
    elif fill == "blur":
        filler = ndimage.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0), mode="reflect")
    else:
        filler = surround_fill(image, masks, sigma)  # one fill per mask
    out = np.repeat(image[None], len(masks), axis=0)
    filler = np.broadcast_to(np.asarray(filler).round().clip(0, 255).astype(np.uint8), out.shape)
    out[masks] = filler[masks]
    return out


def measure(probes: Iterable[Probe], predict: Predict, batch_size: int = 256) -> pd.DataFrame:
    """One row per (image, method, removed object): p_true (image), p_removed (without the object), their
    difference `effect`, and `flipped` (the predicted city changed). Views are sent to `predict` about
    `batch_size` at a time, whole probes together (all objects of a batch of images in one forward pass)."""
    rows: list[dict] = []
    pending: list[Probe] = []

    def flush() -> None:
        if not pending:
            return
        probs = predict(np.concatenate([p.views for p in pending]))
        at = 0
        for p in pending:
            block, at = probs[at : at + len(p.views)], at + len(p.views)
            pred = block.argmax(1)
            for k, (name, method) in enumerate(zip(p.objects, p.methods)):
                rows.append(
                    {
                        "image": p.image,
                        "city": p.city,
                        "place": p.place,
                        "method": method,
                        "object": name,
                        "p_true": float(block[0, p.target]),
                        "p_removed": float(block[1 + k, p.target]),
                        "effect": float(block[0, p.target] - block[1 + k, p.target]),
                        "flipped": bool(pred[1 + k] != pred[0]),
                    }
                )
        pending.clear()

    size = 0
    for probe in probes:
        pending.append(probe)
        size += len(probe.views)
        if size >= batch_size:
            flush()
            size = 0
    flush()
    columns = ["image", "city", "place", "method", "object", "p_true", "p_removed", "effect", "flipped"]
    return pd.DataFrame(rows, columns=columns)


def causal_table(
    rows: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int = 0, by_place: bool = True
) -> pd.DataFrame:
    """Per (method, city, object) of `measure`'s rows: n_images, mean effect with a bootstrap interval,
    flip_rate, method.

    The interval resamples images, or their places when `by_place` (the same as images where every image is
    its own place, as on synthetic data). Sorted by method (as METHODS), city, then effect (largest first).
    """
    out = []
    for (method, city, name), group in rows.groupby(["method", "city", "object"], sort=True):
        effects = group["effect"].to_numpy(np.float64)
        places = group["place"].to_numpy() if by_place else None
        low, high = bootstrap_ci(effects, n_boot, level, seed, groups=places)
        out.append([city, name, len(group), effects.mean(), low, high, group["flipped"].mean(), method])
    table = pd.DataFrame(out, columns=TABLE_COLUMNS)
    table["flip_rate"] = table["flip_rate"].astype(float)
    order = table["method"].map(METHODS.index)
    table = table.assign(_order=order).sort_values(
        ["_order", "city", "effect"], ascending=[True, True, False]
    )
    return table.drop(columns="_order").reset_index(drop=True)


def causal_agreement(reference: pd.DataFrame, proxy: pd.DataFrame) -> pd.DataFrame:
    """How far a proxy's effects follow the reference's: one row with the two methods, n_pairs (the (city,
    object) pairs both measure), Spearman rho and its p-value over those pairs, and the mean absolute
    difference of the effects. rho is NaN with fewer than 3 pairs or a constant column."""
    merged = reference.merge(proxy, on=["city", "object"], suffixes=("_ref", "_proxy"))
    a, b = merged["effect_ref"].to_numpy(), merged["effect_proxy"].to_numpy()
    rho = p = float("nan")
    if len(merged) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
        result = stats.spearmanr(a, b)
        rho, p = float(result.statistic), float(result.pvalue)
    return pd.DataFrame(
        [
            {
                "reference": _single(reference, "method"),
                "proxy": _single(proxy, "method"),
                "n_pairs": len(merged),
                "spearman": rho,
                "p_value": p,
                "mean_abs_diff": float(np.abs(a - b).mean()) if len(merged) else float("nan"),
            }
        ]
    )


def _single(table: pd.DataFrame, column: str) -> str:
    values = sorted(set(table[column]))
    if len(values) != 1:
        raise ValueError(f"expected one {column} per table, got {values}")
    return values[0]


def present_objects(labels: np.ndarray, names: Sequence[str], min_pixels: int) -> list[int]:
    """Class indices in a label map with at least `min_pixels` pixels, skipping indices without a name."""
    counts = np.bincount(labels.ravel(), minlength=256)
    return [int(c) for c in np.flatnonzero(counts >= max(1, min_pixels)) if c < len(names)]
