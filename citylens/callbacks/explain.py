"""After fit: the explain step (mask store, t-SNE map, Figures 3, 4 and 6) of the run's analysis variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from citylens.callbacks.base import (
    AnalysisCallback,
    best_checkpoint,
    log_artifacts,
    log_image_table,
    on_rank_zero,
)
from citylens.pipeline.explain_step import (
    ExplainOptions,
    empty_scene_inputs,
    needs_label_maps,
    run_explain,
    test_views,
)
from citylens.pipeline.masks import compute_maps, shard_bounds
from citylens.pipeline.objects_step import available_label_maps
from citylens.pipeline.variant import Variant
from citylens.report.explorer import thumbnail_chunks
from citylens.segment import Segmenter


def gather_maps(
    trainer: pl.Trainer, module: pl.LightningModule, variant: Variant, batch_size: int, labels: Any = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every rank explains its share of the test split; rank 0 gets all maps in split order, others None."""
    start, stop = shard_bounds(
        len(trainer.datamodule.splits["test"]), batch_size, trainer.global_rank, trainer.world_size
    )
    part = compute_maps(
        module.network,
        module.hparams.arch,
        variant,
        trainer.datamodule,
        batch_size,
        start,
        stop,
        labels,
        empty_scene_inputs,
    )
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, part)
    if not trainer.is_global_zero:
        return None
    parts = [p for p in parts if len(p[0])]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class ExplainCallback(AnalysisCallback):
    """Masks, store, t-SNE (PCA to `pca_dims`, then t-SNE) and the per-run Figures 3, 4 and 6 of `variant`.

    An object explainer (occlusion, shapley) reads the test split's label maps from `segmenter` through the
    label-map cache under `cache_dir` (the one the objects step reads next).
    """

    def __init__(
        self,
        variant: Variant,
        batch_size: int = 64,
        tsne_side: int = 32,
        pca_dims: int = 50,
        perplexity: float = 30.0,
        thumbnails: int = 500,
        examples_per_city: int = 3,
        seed: int = 0,
        run_seed: int | None = None,
        segmenter: Segmenter | None = None,
        cache_dir: str = "data_cache",
    ) -> None:
        self.variant = variant
        self.segmenter, self.cache_dir = segmenter, Path(cache_dir)
        self.options = ExplainOptions(
            batch_size, tsne_side, pca_dims, perplexity, thumbnails, examples_per_city, seed
        )
        self.run_seed = run_seed

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Under DDP every rank explains its share first; rank 0 then writes the store and the figures."""
        if trainer.sanity_checking or trainer.world_size == 1:
            return super().on_test_end(trainer, pl_module)
        labels = self.label_maps(trainer.datamodule)
        maps = gather_maps(trainer, pl_module, self.variant, self.options.batch_size, labels)
        run_dir = Path(trainer.default_root_dir)
        on_rank_zero(
            trainer, lambda: self.analyse(pl_module, trainer.datamodule, run_dir, trainer.loggers, maps=maps)
        )

    def label_maps(self, datamodule: Any) -> Any:
        """The test split's label maps when the variant's explainer needs them, else None."""
        if not needs_label_maps(self.variant):
            return None
        if self.segmenter is None:
            raise ValueError(
                f"explainer {self.variant.explainer}: needs label maps; set callbacks.explain.segmenter"
            )
        labels = available_label_maps(
            f"explainer {self.variant.explainer}",
            self.segmenter,
            datamodule,
            self.cache_dir,
            self.options.batch_size,
        )
        if labels is None:
            raise ValueError(f"explainer {self.variant.explainer}: the test images have no label maps")
        return labels

    def analyse(
        self,
        module: pl.LightningModule,
        datamodule: Any,
        run_dir: Path,
        loggers: list[Any],
        maps: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        # After fit, the trainer knows the tested checkpoint; citylens-analyze loads best_checkpoint(run_dir).
        trainer = module._trainer
        checkpoint = trainer.ckpt_path if trainer is not None else str(best_checkpoint(run_dir))
        with torch.inference_mode(False):
            result = run_explain(
                module.network,
                module.hparams.arch,
                self.variant,
                datamodule,
                run_dir,
                self.run_seed,
                checkpoint,
                self.options,
                maps,
                self.label_maps(datamodule) if maps is None else None,
            )
        log_artifacts(loggers, images=result.figures, tables={"tsne": result.tsne})
        per_image = result.tsne[["image_id", "city", "predicted", "probability", "x", "y"]]
        chunks = thumbnail_chunks(
            result.store, lambda idx: test_views(datamodule, idx), self.variant.threshold
        )
        log_image_table(loggers, "images", per_image, chunks)
