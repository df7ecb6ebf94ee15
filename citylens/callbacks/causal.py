"""After fit: the causal importance of objects for the network -> <run>/causal.csv and, on synthetic data,
<run>/causal_agreement.csv (citylens.pipeline.causal_step; docs/causal.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from citylens.callbacks.base import AnalysisCallback, log_artifacts
from citylens.pipeline.causal_step import CausalOptions, run_causal
from citylens.segment import Segmenter


class CausalCallback(AnalysisCallback):
    """Writes causal.csv (counterfactual on synthetic data, deletion where enabled) and causal_agreement.csv;
    the settings are CausalOptions'."""

    def __init__(
        self,
        segmenter: Segmenter | None = None,
        enabled: bool | None = None,
        methods: Sequence[str] | None = None,
        max_images: int | None = None,
        fill: str = "mean",
        blur_sigma: float = 0.1,
        min_share: float = 0.001,
        batch_size: int = 256,
        bf16: bool = False,
        workers: int = 0,
        label_batch_size: int = 64,
        n_boot: int = 1000,
        seed: int = 0,
        cache_dir: str = "data_cache",
        render_cache: bool = True,
    ) -> None:
        self.segmenter, self.cache_dir = segmenter, Path(cache_dir)
        self.options = CausalOptions(
            enabled,
            None if methods is None else tuple(methods),
            max_images,
            fill,
            blur_sigma,
            min_share,
            batch_size,
            bf16,
            workers,
            label_batch_size,
            n_boot,
            seed,
            render_cache,
        )

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        tables = run_causal(module, datamodule, run_dir, self.options, self.segmenter, self.cache_dir)
        log_artifacts(loggers, tables=tables)
