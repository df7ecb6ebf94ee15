"""After explain: label maps of the test images, object ratios R_p^c, Figure 5, planted-object recovery."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from citylens.analysis.ratios import RatioAccumulator, planted_recovery, ratio_summary
from citylens.callbacks.base import AnalysisCallback, log, log_artifacts
from citylens.explain import validate_threshold
from citylens.explain.store import MaskStore, check_labels_match, open_store
from citylens.io import atomic_path
from citylens.report import figures
from citylens.segment import GroundTruthSegmenter, LabelMapCache, Segmenter, label_cache_key


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def label_maps(
    segmenter: Segmenter, datamodule: Any, cache_dir: Path, batch_size: int, store: MaskStore
) -> Any:
    """The test split's label maps from the shared cache, segmenting only what is not cached yet.

    Refused (StoreError naming the first differing image) unless the data module's test split and the cache's
    label maps are exactly the store's images in order, from the store's dataset.
    """
    ids = [r.image_id for r in datamodule.splits["test"]]
    check_labels_match(store, ids, datamodule.fingerprint)
    key = label_cache_key(datamodule.fingerprint, "test", segmenter, datamodule.input_size, ids)
    cache = LabelMapCache(Path(cache_dir) / "labels", key)
    labels = cache.build(segmenter, datamodule.analysis_batches("test", batch_size), len(ids))
    check_labels_match(store, cache.image_ids(), None)
    return labels


class ObjectsCallback(AnalysisCallback):
    """Writes object_ratios.csv, ratio_summary.csv, figures/fig5_ratios.png and (synthetic) recovery.csv."""

    def __init__(
        self,
        segmenter: Segmenter,
        threshold: float = 0.5,
        extra_thresholds: Sequence[float] = (),
        min_mean_pixels: float = 100,
        batch_size: int = 64,
        cache_dir: str = "data_cache",
        n_boot: int = 1000,
        seed: int = 0,
    ) -> None:
        self.segmenter, self.threshold = segmenter, validate_threshold(threshold)
        self.thresholds = sorted({self.threshold, *(validate_threshold(t) for t in extra_thresholds)})
        self.min_mean_pixels, self.batch_size, self.cache_dir = min_mean_pixels, batch_size, Path(cache_dir)
        self.n_boot, self.seed = n_boot, seed

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        store = open_store(run_dir)
        unlabelled = [r.image_id for r in datamodule.splits["test"] if r.label_path is None]
        if isinstance(self.segmenter, GroundTruthSegmenter) and unlabelled:
            log.warning(
                "object ratios skipped: %d test images have no stored label map (e.g. %s); choose a network "
                "segmenter (segmenter=segformer or segmenter=csail) for this dataset",
                len(unlabelled),
                unlabelled[0],
            )
            return
        labels = label_maps(self.segmenter, datamodule, self.cache_dir, self.batch_size, store)
        min_pixels = self.min_mean_pixels * (store.size / 224) ** 2
        acc = RatioAccumulator(self.thresholds, min_pixels)
        for start, masks in store.chunks(256):
            stop = start + len(masks)
            acc.update(
                masks, np.array(labels[start:stop]), store.cities[start:stop], store.places[start:stop]
            )
        table = acc.table(self.n_boot, self.seed)
        write_csv(table, run_dir / "object_ratios.csv")
        summary = ratio_summary(table)
        write_csv(summary, run_dir / "ratio_summary.csv")
        tables = {"object_ratios": table, "ratio_summary": summary}
        planted = datamodule.describe().get("planted")
        recovery = None
        if planted:
            recovery = planted_recovery(table, planted)
            write_csv(
                recovery.assign(planted_ranks=recovery["planted_ranks"].map(str)), run_dir / "recovery.csv"
            )
            tables["recovery"] = recovery.assign(planted_ranks=recovery["planted_ranks"].map(str))
            at = recovery[recovery["threshold"] == self.threshold]
            log.info(
                "planted-object recovery at %.2f: %s",
                self.threshold,
                ", ".join(f"{r.city} P@{r.k}={r.precision_at_k:.2f}" for r in at.itertuples()),
            )
        name = f"{store.meta['arch']}-s{store.meta['seed']}"
        at_threshold = None if recovery is None else recovery[recovery["threshold"] == self.threshold]
        fig = figures.ratio_bars(
            table[table["threshold"] == self.threshold],
            planted=planted,
            recovery=at_threshold,
            title=f"{name}: object ratios at threshold {self.threshold} (Fig. 5)",
        )
        path = figures.save(fig, run_dir / "figures" / "fig5_ratios.png")
        log_artifacts(loggers, images={"fig5_ratios": path}, tables=tables)
