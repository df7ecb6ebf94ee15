"""The faithfulness step of a run's analysis: faithfulness.csv (R against causal effects) and sanity.csv
(the model-parameter randomisation test) of one variant, as plain functions (docs/faithfulness.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from citylens.analysis.faithfulness import CAUSAL_FILE, FAITHFULNESS_FILE, RATIOS_FILE, faithfulness
from citylens.analysis.sanity import FULL, SANITY_FILE, SANITY_FLAG_RHO, ExplainerFactory, sanity_check
from citylens.core.io import write_csv
from citylens.core.view import to_input
from citylens.explain.methods import build_explainer, explainer_name
from citylens.pipeline.explain_step import test_views
from citylens.pipeline.masks import sample_indices

log = logging.getLogger("citylens.analysis")


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
    """The explainer builder for a registered method name (citylens.explain.build_explainer)."""
    explainer_name(name)
    return lambda network, layer: build_explainer(name, network, layer)


def sanity_sample(
    datamodule: Any, n_images: int, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Up to n_images test images, as many per city, fixed by the split: (inputs, true cities, indices)."""
    targets = datamodule.targets("test")
    n_cities = max(1, len(np.unique(targets)))
    idx = sample_indices(targets, max(1, n_images // n_cities), seed)
    views = torch.from_numpy(test_views(datamodule, idx)).permute(0, 3, 1, 2)
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
