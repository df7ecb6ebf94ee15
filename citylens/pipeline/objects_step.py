"""The objects step of a run's analysis: label maps, object ratios R_p^c, Figure 5, planted recovery and, for
an attribution explainer, the object attribution A_p^c."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from citylens import figures
from citylens.analysis.attribution import ATTRIBUTION_FILE, attribution_table, object_values
from citylens.analysis.ratios import RatioAccumulator, planted_recovery, ratio_summary
from citylens.core.io import write_csv
from citylens.explain.methods import EXPLAINERS, is_attribution
from citylens.explain.store import MaskStore, check_labels_match
from citylens.pipeline.variant import Variant
from citylens.segment import GroundTruthSegmenter, LabelMapCache, Segmenter, label_cache_key

log = logging.getLogger("citylens.analysis")


@dataclass
class ObjectsResult:
    """What the objects step wrote: its tables by name and the Figure 5 path."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figure: Path | None = None


def label_maps(
    segmenter: Segmenter, datamodule: Any, cache_dir: Path, batch_size: int, store: MaskStore | None = None
) -> Any:
    """The test split's label maps from the shared cache, segmenting only what is not cached yet.

    With a `store`, refused (StoreError naming the first differing image) unless the data module's test split
    and the cache's label maps are exactly the store's images in order, from the store's dataset.
    """
    ids = [r.image_id for r in datamodule.splits["test"]]
    if store is not None:
        check_labels_match(store, ids, datamodule.fingerprint)
    key = label_cache_key(datamodule.fingerprint, "test", segmenter, datamodule.input_size, ids)
    cache = LabelMapCache(Path(cache_dir) / "labels", key)
    labels = cache.build(segmenter, datamodule.analysis_batches("test", batch_size), len(ids))
    if store is not None:
        check_labels_match(store, cache.image_ids(), None)
    return labels


def selected(store: MaskStore, variant: Variant) -> np.ndarray:
    """Boolean per test image: does it enter the ratios (every image, or only the correctly classified)."""
    if variant.images == "correct":
        return store.preds == store.targets
    return np.ones(len(store), dtype=bool)


def object_ratios(
    store: MaskStore,
    labels: Any,
    variant: Variant,
    thresholds: Sequence[float],
    min_mean_pixels: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """R_p^c at every threshold over the variant's images, with intervals over test places (`n_boot`
    replicates); min_mean_pixels is given at 224 px and scaled to the store's view."""
    acc = RatioAccumulator(thresholds, min_mean_pixels * (store.size / 224) ** 2)
    keep = selected(store, variant)
    cities, places = np.asarray(store.cities), np.asarray(store.places)
    for start, masks in store.chunks(256):
        stop = start + len(masks)
        rows = keep[start:stop]
        if rows.any():
            acc.update(
                masks[rows],
                np.array(labels[start:stop])[rows],
                list(cities[start:stop][rows]),
                list(places[start:stop][rows]),
            )
    return acc.table(n_boot, seed)


def object_attribution(
    store: MaskStore,
    labels: Any,
    variant: Variant,
    min_mean_pixels: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """A_p^c of the variant's images from the store's signed maps: per image and object the map's sum over
    the object (pixel explainers) or mean (object explainers), averaged per city over the images containing
    the object, with intervals over test places; min_mean_pixels is given at 224 px as for the ratios."""
    statistic = EXPLAINERS[variant.explainer].object_statistic
    keep = selected(store, variant)
    values, pixels = [], []
    for start in range(0, len(store), 256):
        stop = min(len(store), start + 256)
        rows = keep[start:stop]
        v, p = object_values(store.maps(start, stop)[rows], np.array(labels[start:stop])[rows], statistic)
        values.append(v)
        pixels.append(p)
    return attribution_table(
        np.concatenate(values),
        np.concatenate(pixels),
        np.asarray(store.cities)[keep],
        np.asarray(store.places)[keep],
        min_mean_pixels * (store.size / 224) ** 2,
        n_boot,
        seed,
    )


def available_label_maps(
    step: str,
    segmenter: Segmenter,
    datamodule: Any,
    cache_dir: Path,
    batch_size: int,
    store: MaskStore | None = None,
) -> Any:
    """label_maps, or None with a warning naming `step` when the segmenter reads stored label maps (the
    ground truth) and some test image has none: that data needs a network segmenter."""
    unlabelled = [r.image_id for r in datamodule.splits["test"] if r.label_path is None]
    if isinstance(segmenter, GroundTruthSegmenter) and unlabelled:
        log.warning(
            "%s skipped: %d test images have no stored label map (e.g. %s); choose a network segmenter "
            "(segmenter=segformer or segmenter=csail) for this dataset",
            step,
            len(unlabelled),
            unlabelled[0],
        )
        return None
    return label_maps(segmenter, datamodule, cache_dir, batch_size, store)


def run_objects(
    store: MaskStore,
    labels: Any,
    variant: Variant,
    out: Path,
    extra_thresholds: Sequence[float] = (),
    min_mean_pixels: float = 100,
    planted: dict[str, list[str]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> ObjectsResult:
    """object_ratios.csv, ratio_summary.csv, figures/fig5_ratios.png, (synthetic) recovery.csv and, for an
    attribution explainer, object_attribution.csv in `out` (a CAM variant writes what it always wrote)."""
    thresholds = sorted({variant.threshold, *extra_thresholds})
    table = object_ratios(store, labels, variant, thresholds, min_mean_pixels, n_boot, seed)
    result = ObjectsResult({"object_ratios": table, "ratio_summary": ratio_summary(table)})
    write_csv(table, out / "object_ratios.csv")
    write_csv(result.tables["ratio_summary"], out / "ratio_summary.csv")
    if is_attribution(variant.explainer):
        result.tables["object_attribution"] = object_attribution(
            store, labels, variant, min_mean_pixels, n_boot, seed
        )
        write_csv(result.tables["object_attribution"], out / ATTRIBUTION_FILE)
    at_threshold = None
    if planted:
        recovery = planted_recovery(table, planted)
        result.tables["recovery"] = recovery.assign(planted_ranks=recovery["planted_ranks"].map(str))
        write_csv(result.tables["recovery"], out / "recovery.csv")
        at_threshold = recovery[np.isclose(recovery["threshold"], variant.threshold)]
        log.info(
            "planted-object recovery at %.2f: %s",
            variant.threshold,
            ", ".join(f"{r.city} P@{r.k}={r.precision_at_k:.2f}" for r in at_threshold.itertuples()),
        )
    name = f"{store.meta['arch']}-s{store.meta['seed']} {variant.explainer}@{variant.layer}"
    fig = figures.ratio_bars(
        table[np.isclose(table["threshold"], variant.threshold)],
        planted=planted,
        recovery=at_threshold,
        title=f"{name}: object ratios at threshold {variant.threshold} (Fig. 5)",
    )
    result.figure = figures.save(fig, out / "figures" / "fig5_ratios.png")
    return result
