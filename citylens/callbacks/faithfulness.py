"""After objects and causal: faithfulness.csv (R against causal effects) and sanity.csv (randomisation test)
of the run's analysis variant, in `<run>/analysis/<variant>/` (citylens.pipeline.faithfulness_step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch

from citylens.analysis.faithfulness import CAUSAL_FILE, RATIOS_FILE
from citylens.callbacks.base import AnalysisCallback, log, log_artifacts
from citylens.core.layers import resolve_target_layer
from citylens.pipeline.faithfulness_step import sanity_sample, write_faithfulness, write_sanity
from citylens.pipeline.variant import Variant


class FaithfulnessCallback(AnalysisCallback):
    """Writes faithfulness.csv (if object_ratios.csv and causal.csv exist) and sanity.csv (if `sanity`)."""

    def __init__(
        self,
        variant: Variant,
        default_k: int = 3,
        sanity: bool = True,
        n_images: int = 64,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        if n_images < 1:
            raise ValueError(f"callbacks.faithfulness.n_images must be >= 1, got {n_images}")
        if default_k < 1:
            raise ValueError(f"callbacks.faithfulness.default_k must be >= 1, got {default_k}")
        self.variant, self.default_k = variant, default_k
        self.sanity, self.n_images, self.batch_size, self.seed = sanity, n_images, batch_size, seed

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        tables = {}
        out = self.variant.dir(run_dir)
        ratios, causal = out / RATIOS_FILE, run_dir / CAUSAL_FILE
        missing = [p.name for p in (ratios, causal) if not p.is_file()]
        if missing:
            log.warning("faithfulness skipped: %s has no %s", run_dir, " or ".join(missing))
        else:
            tables["faithfulness"] = write_faithfulness(
                pd.read_csv(ratios),
                pd.read_csv(causal),
                out,
                self.variant.threshold,
                datamodule.describe().get("planted"),
                self.default_k,
                (str(ratios), str(causal)),
            )
            log.info(
                "faithfulness: %s",
                ", ".join(
                    f"{r.city} ({r.method}) rho={r.spearman:.2f} P@{r.k}={r.p_at_k:.2f}"
                    for r in tables["faithfulness"].itertuples()
                ),
            )
        if self.sanity:
            arch = module.hparams.arch
            images, labels, _ = sanity_sample(datamodule, self.n_images, self.seed)
            layer, _ = resolve_target_layer(module.network, arch, self.variant.layer)
            with torch.inference_mode(False):
                tables["sanity"] = write_sanity(
                    module.network,
                    layer,
                    arch,
                    images,
                    labels if self.variant.target == "label" else None,
                    out,
                    self.variant.explainer,
                    self.seed,
                    self.batch_size,
                )
        log_artifacts(loggers, tables=tables)
