"""After explain: the objects step (label maps, object ratios R_p^c, Figure 5, planted-object recovery)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from citylens.callbacks.base import AnalysisCallback, log_artifacts
from citylens.explain import validate_threshold
from citylens.explain.store import open_store
from citylens.pipeline.objects_step import available_label_maps, run_objects
from citylens.pipeline.variant import Variant
from citylens.segment import Segmenter


class ObjectsCallback(AnalysisCallback):
    """Writes object_ratios.csv, ratio_summary.csv, figures/fig5_ratios.png and (synthetic) recovery.csv."""

    def __init__(
        self,
        segmenter: Segmenter,
        variant: Variant,
        extra_thresholds: Sequence[float] = (),
        min_mean_pixels: float = 100,
        batch_size: int = 64,
        cache_dir: str = "data_cache",
        n_boot: int = 1000,
        seed: int = 0,
    ) -> None:
        self.segmenter, self.variant = segmenter, variant
        self.extra_thresholds = [validate_threshold(t) for t in extra_thresholds]
        self.min_mean_pixels, self.batch_size, self.cache_dir = min_mean_pixels, batch_size, Path(cache_dir)
        self.n_boot, self.seed = n_boot, seed

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        out = self.variant.dir(run_dir)
        store = open_store(out)
        labels = available_label_maps(
            "object ratios", self.segmenter, datamodule, self.cache_dir, self.batch_size, store
        )
        if labels is None:
            return
        result = run_objects(
            store,
            labels,
            self.variant,
            out,
            self.extra_thresholds,
            self.min_mean_pixels,
            datamodule.describe().get("planted"),
            self.n_boot,
            self.seed,
        )
        log_artifacts(loggers, images={"fig5_ratios": result.figure}, tables=result.tables)
