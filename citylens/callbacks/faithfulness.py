"""After objects and causal: faithfulness.csv (R against causal effects) and sanity.csv (randomisation test)
of the run's analysis variant, in `<run>/analysis/<variant>/` (citylens.pipeline.faithfulness_step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from citylens.callbacks.base import AnalysisCallback, log_artifacts
from citylens.pipeline.faithfulness_step import FaithfulnessOptions, run_faithfulness
from citylens.pipeline.variant import Variant


class FaithfulnessCallback(AnalysisCallback):
    """Writes faithfulness.csv (if object_ratios.csv and causal.csv exist) and sanity.csv (if `sanity`);
    the settings are FaithfulnessOptions'."""

    def __init__(
        self,
        variant: Variant,
        default_k: int = 3,
        sanity: bool = True,
        n_images: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.variant = variant
        self.options = FaithfulnessOptions(default_k, sanity, n_images, batch_size, seed)

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        tables = run_faithfulness(
            module.network, module.hparams.arch, self.variant, datamodule, run_dir, self.options
        )
        log_artifacts(loggers, tables=tables)
