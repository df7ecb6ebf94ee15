"""After objects and causal: faithfulness.csv (R against causal effects) and sanity.csv (randomisation test).

Thin layer over citylens.analysis.faithfulness and citylens.analysis.sanity. `write_faithfulness` and
`write_sanity` take explicit inputs and an output folder, so the same code serves an analysis variant's folder
(`<run>/analysis/<variant>/`); the callback reads and writes the run folder's files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch import nn

import citylens.explain
from citylens.analysis.faithfulness import CAUSAL_FILE, FAITHFULNESS_FILE, RATIOS_FILE, faithfulness
from citylens.analysis.sanity import FULL, SANITY_FILE, SANITY_FLAG_RHO, ExplainerFactory, sanity_check
from citylens.callbacks.base import AnalysisCallback, log, log_artifacts
from citylens.callbacks.explain import sample_indices, views_at
from citylens.callbacks.objects import write_csv
from citylens.data.datamodule import to_input
from citylens.explain import GradCAM, validate_threshold

TARGETS = ("label", "prediction")


def write_faithfulness(
    ratios: pd.DataFrame,
    causal: pd.DataFrame,
    out_dir: Path,
    threshold: float,
    planted: dict[str, Sequence[str]] | None = None,
    default_k: int = 3,
    names: tuple[str, str] = (RATIOS_FILE, CAUSAL_FILE),
) -> pd.DataFrame:
    """Score one variant's object ratios against the run's causal table -> out_dir/faithfulness.csv."""
    table = faithfulness(ratios, causal, threshold, planted, default_k, names)
    write_csv(table, Path(out_dir) / FAITHFULNESS_FILE)
    return table


def explainer_factory(name: str) -> ExplainerFactory:
    """The explainer builder for a method name: build_explainer where citylens has it, else GradCAM."""
    build = getattr(citylens.explain, "build_explainer", None)
    if build is not None:
        return lambda network, layer: build(name, network, layer)
    if name != "gradcam":
        raise ValueError(
            f"callbacks.faithfulness.explainer: unknown explainer {name!r}; this citylens has gradcam"
        )
    return GradCAM


def sanity_sample(
    datamodule: Any, n_images: int, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Up to n_images test images, as many per city, fixed by the split: (inputs, true cities, indices)."""
    targets = datamodule.targets("test")
    n_cities = max(1, len(np.unique(targets)))
    idx = sample_indices(targets, max(1, n_images // n_cities), seed)
    views = torch.from_numpy(views_at(datamodule, idx)).permute(0, 3, 1, 2)
    return to_input(views), targets[idx], idx


def write_sanity(
    network: nn.Module,
    layer: nn.Module,
    arch: str,
    images: torch.Tensor,
    targets: np.ndarray | None,
    out_dir: Path,
    explainer: str = "gradcam",
    seed: int = 0,
    batch_size: int = 32,
) -> pd.DataFrame:
    """sanity_check of one explainer on `images` -> out_dir/sanity.csv; targets None = predicted classes."""
    table = sanity_check(
        network, layer, arch, images, targets, explainer_factory(explainer), explainer, seed, batch_size
    )
    write_csv(table, Path(out_dir) / SANITY_FILE)
    full = table[table["step_name"] == FULL]["mean_spearman"].iloc[0]
    if full > SANITY_FLAG_RHO:
        log.warning(
            "sanity check: %s masks keep rank correlation %.2f with a fully re-initialised %s; they do not "
            "depend on what the network learned",
            explainer,
            full,
            arch,
        )
    return table


class FaithfulnessCallback(AnalysisCallback):
    """Writes faithfulness.csv (if object_ratios.csv and causal.csv exist) and sanity.csv (if `sanity`)."""

    def __init__(
        self,
        threshold: float = 0.5,
        default_k: int = 3,
        sanity: bool = True,
        n_images: int = 64,
        explainer: str = "gradcam",
        target: str = "label",
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        if n_images < 1:
            raise ValueError(f"callbacks.faithfulness.n_images must be >= 1, got {n_images}")
        if target not in TARGETS:
            raise ValueError(f"callbacks.faithfulness.target must be one of {list(TARGETS)}, got {target!r}")
        if default_k < 1:
            raise ValueError(f"callbacks.faithfulness.default_k must be >= 1, got {default_k}")
        self.threshold, self.default_k = validate_threshold(threshold), default_k
        self.sanity, self.n_images, self.explainer, self.target = sanity, n_images, explainer, target
        self.batch_size, self.seed = batch_size, seed

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        tables = {}
        ratios, causal = run_dir / RATIOS_FILE, run_dir / CAUSAL_FILE
        missing = [p.name for p in (ratios, causal) if not p.is_file()]
        if missing:
            log.warning("faithfulness skipped: %s has no %s", run_dir, " or ".join(missing))
        else:
            tables["faithfulness"] = write_faithfulness(
                pd.read_csv(ratios),
                pd.read_csv(causal),
                run_dir,
                self.threshold,
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
            images, labels, _ = sanity_sample(datamodule, self.n_images, self.seed)
            with torch.inference_mode(False):
                tables["sanity"] = write_sanity(
                    module.network,
                    module.target_layer,
                    module.hparams.arch,
                    images,
                    labels if self.target == "label" else None,
                    run_dir,
                    self.explainer,
                    self.seed,
                    self.batch_size,
                )
        log_artifacts(loggers, tables=tables)
