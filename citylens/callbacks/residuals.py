"""After explain: the run's AR against the finished runs of its sweep, written to
<run>/analysis/<variant>/residuals.csv (citylens.pipeline.residuals_step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from citylens.callbacks.base import AnalysisCallback, log_artifacts
from citylens.pipeline.residuals_step import write_residuals
from citylens.pipeline.variant import Variant


class ResidualsCallback(AnalysisCallback):
    """Writes residuals.csv: this run's AR against the runs of its sweep that finished before it."""

    def __init__(
        self, variant: Variant, chunk: int = 128, strict: bool = True, sweep_dir: str | None = None
    ) -> None:
        if chunk < 1:
            raise ValueError(f"callbacks.residuals.chunk: must be >= 1, got {chunk}")
        self.variant, self.chunk, self.strict, self.sweep_dir = variant, chunk, strict, sweep_dir

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        table = write_residuals(
            run_dir, self.variant, sweep_dir=self.sweep_dir, chunk=self.chunk, strict=self.strict
        )
        if table is not None:
            log_artifacts(loggers, tables={"residuals": table})
