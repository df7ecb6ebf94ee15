"""The one Lightning callback of the after-fit analysis, and the same analysis without Lightning.

After the post-fit test, `AnalysisCallback` runs the run's analysis steps (citylens.pipeline.run_analysis) on
the tested checkpoint, once. Under DDP every rank first explains its share of the test split and rank 0
gathers the maps (the same result as a single process); rank 0 then runs the steps over the whole test split
while the other ranks wait at a barrier, so the process group stays up until it is done. `run_steps` is the
same analysis on a loaded module, for `citylens-analyze` and a run's extra variants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from citylens.app.config import analysis_steps, analysis_variant
from citylens.core.lazy import wandb_loggers
from citylens.pipeline.context import Context, StepResult
from citylens.pipeline.explain_step import ExplainOptions, explainer_label_maps
from citylens.pipeline.masks import compute_maps, shard_bounds
from citylens.pipeline.steps import StepOptions, is_current, run_analysis
from citylens.report.explorer import thumbnail_chunks

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


def analysis_context(
    cfg: DictConfig, network: torch.nn.Module, datamodule: Any, run_dir: Path, checkpoint: str | None
) -> Context:
    """The context of the run's analysis variant: the network, the test split, the segmenter of `cfg`."""
    segmenter = instantiate(cfg.segmenter) if cfg.get("segmenter") is not None else None
    return Context(
        network=network,
        arch=str(cfg.model.arch),
        test=datamodule.split_view("test"),
        fit=datamodule.split_view("val"),
        run_dir=Path(run_dir),
        variant=analysis_variant(cfg),
        segmenter=segmenter,
        cache_dir=Path(str(cfg.paths.cache_dir)),
        run_seed=cfg.get("seed"),
        checkpoint=str(checkpoint) if checkpoint else None,
    )


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


def log_result(loggers: list[Any], context: Context, result: StepResult) -> None:
    """Send a step's figures and tables to the loggers that take them (W&B images and tables)."""
    for logger in wandb_loggers(loggers):
        for key, path in result.figures.items():
            logger.log_image(key=key, images=[str(path)])
        for key, table in result.tables.items():
            logger.log_table(key=key, dataframe=table.reset_index(drop=True))
    if result.image_table is not None:
        frame, store = result.image_table
        chunks = thumbnail_chunks(store, context.test.views, context.variant.threshold)
        log_image_table(loggers, "images", frame, chunks)


def run_steps(
    cfg: DictConfig,
    module: pl.LightningModule,
    datamodule: Any,
    run_dir: Path,
    loggers: list[Any],
    checkpoint: str | None,
    maps: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Run the analysis steps of `cfg` on a trained module, without a Trainer."""
    context = analysis_context(cfg, module.network, datamodule, run_dir, checkpoint)
    context.maps = maps
    run_analysis(context, analysis_steps(cfg), lambda step, result: log_result(loggers, context, result))


def gather_maps(
    trainer: pl.Trainer, context: Context, options: ExplainOptions
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every rank explains its share of the test split; rank 0 gets all maps in split order, others None."""
    start, stop = shard_bounds(
        len(context.test.records), options.batch_size, trainer.global_rank, trainer.world_size
    )
    labels = explainer_label_maps(context, options.batch_size)
    part = compute_maps(context, options.batch_size, start, stop, labels)
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, part)
    if not trainer.is_global_zero:
        return None
    parts = [p for p in parts if len(p[0])]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class AnalysisCallback(pl.Callback):
    """Runs the analysis steps of `cfg` (conf/analysis/) after the post-fit test, on the tested checkpoint."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        run_dir = Path(trainer.default_root_dir)
        maps = None
        if trainer.world_size > 1:
            context = analysis_context(
                self.cfg, pl_module.network, trainer.datamodule, run_dir, trainer.ckpt_path
            )
            explain = [s for s in analysis_steps(self.cfg) if isinstance(s, ExplainOptions)]
            if explain and not is_current(explain[0], context):
                with torch.inference_mode(False):
                    maps = gather_maps(trainer, context, explain[0])
        on_rank_zero(
            trainer,
            lambda: run_steps(
                self.cfg, pl_module, trainer.datamodule, run_dir, trainer.loggers, trainer.ckpt_path, maps
            ),
        )


__all__ = ["AnalysisCallback", "StepOptions", "analysis_context", "on_rank_zero", "run_steps"]
