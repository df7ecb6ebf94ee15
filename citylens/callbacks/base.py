"""What every analysis callback shares: it runs after the post-fit test, on the best checkpoint, once.

`analyse(module, datamodule, run_dir, loggers)` is the whole job, so `citylens-analyze` can run the
same code on a finished run without a Trainer. Under DDP it runs on global rank 0 over the whole test
split (the same result as a single process, written once; ExplainCallback first gathers the Grad-CAM maps
every rank computed for its share) while the other ranks wait at a barrier, so the process group stays up
until rank 0 is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from citylens.run_state import best_checkpoint

__all__ = ["AnalysisCallback", "best_checkpoint", "log_artifacts", "on_rank_zero"]

log = logging.getLogger("citylens.analysis")


def on_rank_zero(trainer: pl.Trainer, work: Callable[[], None]) -> None:
    """Run `work` on global rank 0 while every other rank waits at a barrier (also when `work` fails).

    The wait is bounded by the strategy's process-group timeout (DDPStrategy(timeout=...), see
    conf/trainer/ddp.yaml); a single process runs `work` and the barrier is a no-op.
    """
    try:
        if trainer.is_global_zero:
            work()
    finally:
        trainer.strategy.barrier("citylens-analysis")


class AnalysisCallback(pl.Callback):
    """Base class: subclasses implement `analyse`; `on_test_end` calls it on global rank 0."""

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        raise NotImplementedError

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        run_dir = Path(trainer.default_root_dir)
        on_rank_zero(trainer, lambda: self.analyse(pl_module, trainer.datamodule, run_dir, trainer.loggers))


def wandb_loggers(loggers: list[Any]) -> list[Any]:
    """The W&B loggers among a trainer's loggers."""
    return [logger for logger in loggers if type(logger).__name__ == "WandbLogger"]


def log_image_table(
    loggers: list[Any], key: str, frame: pd.DataFrame, image_chunks: Iterable[dict[str, np.ndarray]]
) -> None:
    """Log a table to W&B whose last columns are images: `frame`'s rows, then one wandb.Image per cell.

    `image_chunks` yields {column: uint8 (n, s, s, 3)} for consecutive rows of `frame`; each image is written
    to W&B's media folder as it is made, so a 30k-row table never holds its pixels in memory at once.
    """
    targets = wandb_loggers(loggers)
    if not targets:
        return
    import wandb

    rows: list[list[Any]] = []
    columns: list[str] = list(frame.columns)
    values = frame.itertuples(index=False, name=None)
    for chunk in image_chunks:
        if len(columns) == len(frame.columns):
            columns += list(chunk)
        n = len(next(iter(chunk.values())))
        for i in range(n):
            rows.append([*next(values), *(wandb.Image(chunk[c][i], file_type="jpg") for c in chunk)])
    for logger in targets:
        logger.log_table(key=key, columns=columns, data=rows)


def log_artifacts(
    loggers: list[Any], images: dict[str, Path] | None = None, tables: dict[str, pd.DataFrame] | None = None
) -> None:
    """Send figures and tables to the loggers that take them (W&B images and tables)."""
    for logger in wandb_loggers(loggers):
        for key, path in (images or {}).items():
            logger.log_image(key=key, images=[str(path)])
        for key, table in (tables or {}).items():
            logger.log_table(key=key, dataframe=table.reset_index(drop=True))
