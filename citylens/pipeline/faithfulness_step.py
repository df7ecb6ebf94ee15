"""The faithfulness step of a run's analysis: faithfulness.csv (R, for an attribution explainer also the
object attribution A_p^c, and where the run has concepts.csv the concepts' object ranking, against causal
effects) and sanity.csv (the model-parameter randomisation test) of
one variant, as plain functions (docs/faithfulness.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from citylens.analysis.attribution import ATTRIBUTION_FILE
from citylens.analysis.concepts import object_importance
from citylens.analysis.faithfulness import (
    CAUSAL_FILE,
    FAITHFULNESS_FILE,
    RATIOS_FILE,
    faithfulness,
    faithfulness_by_statistic,
    with_concepts,
)
from citylens.analysis.sanity import FULL, SANITY_FILE, SANITY_FLAG_RHO, ExplainerFactory, sanity_check
from citylens.core.io import write_csv
from citylens.core.layers import arch_of, resolve_target_layer
from citylens.core.view import to_input
from citylens.explain.methods import EXPLAINERS, build_explainer, explainer_name, is_attribution
from citylens.pipeline.concepts_step import CONCEPTS_FILE
from citylens.pipeline.context import Context, SplitData, StepResult
from citylens.pipeline.masks import balanced_sample
from citylens.pipeline.steps import StepOptions

log = logging.getLogger("citylens.analysis")


def write_faithfulness(
    ratios: pd.DataFrame,
    causal: pd.DataFrame,
    out_dir: Path,
    threshold: float,
    planted: dict[str, Sequence[str]] | None = None,
    default_k: int = 3,
    names: tuple[str, str] = (RATIOS_FILE, CAUSAL_FILE),
    attribution: pd.DataFrame | None = None,
    concepts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Score one variant's object ratios (and its object attribution, and the run's concepts (concepts.csv),
    when given: a `statistic` column then says which row scores which) against the run's causal table ->
    out_dir/faithfulness.csv."""
    if attribution is None:
        table = faithfulness(ratios, causal, threshold, planted, default_k, names)
    else:
        labels = (names[0], ATTRIBUTION_FILE, names[1])
        table = faithfulness_by_statistic(ratios, attribution, causal, threshold, planted, default_k, labels)
    if concepts is not None:
        ranked = object_importance(concepts)
        table = with_concepts(table, ranked, causal, planted, default_k, (CONCEPTS_FILE, names[1]))
    write_csv(table, Path(out_dir) / FAITHFULNESS_FILE)
    return table


def explainer_factory(name: str, options: dict[str, Any] | None = None) -> ExplainerFactory:
    """The builder of a registered explainer with its options (citylens.explain.build_explainer)."""
    explainer_name(name)
    return lambda network, layer: build_explainer(name, network, layer, options=options)


def sanity_sample(data: SplitData, n_images: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Up to n_images test images, as many per city, fixed by the split: (inputs, true cities, indices)."""
    targets = data.targets()
    idx = balanced_sample(targets, n_images, len(np.unique(targets)), seed)
    views = torch.from_numpy(data.views(idx)).permute(0, 3, 1, 2)
    return to_input(views), targets[idx], idx


def write_sanity(
    network: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: np.ndarray | None,
    out_dir: Path,
    explainer: str = "gradcam",
    seed: int = 0,
    batch_size: int = 32,
    options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """sanity_check of one explainer (with its options) on `images` -> out_dir/sanity.csv; targets None =
    predicted classes. A pixel attribution explainer takes the network itself as its `layer`."""
    factory = explainer_factory(explainer, options)
    table = sanity_check(network, layer, images, targets, factory, explainer, seed, batch_size)
    write_csv(table, Path(out_dir) / SANITY_FILE)
    full = table[table["step_name"] == FULL]["mean_spearman"].iloc[0]
    if full > SANITY_FLAG_RHO:
        log.warning(
            "sanity check: %s masks keep rank correlation %.2f with a fully re-initialised %s; they do not "
            "depend on what the network learned",
            explainer,
            full,
            arch_of(network) or type(network).__name__,
        )
    return table


@dataclass(frozen=True)
class FaithfulnessOptions(StepOptions):
    """The faithfulness step (conf/analysis/steps/faithfulness.yaml says what each setting does); checked when
    made. default_k: top-k compared where no planted objects give k. sanity: run the randomisation test on
    n_images test images (as many per city, fixed by the split), batch_size at a time."""

    name: ClassVar[str] = "faithfulness"
    needs: ClassVar[tuple[str, ...]] = (
        RATIOS_FILE,
        ATTRIBUTION_FILE,
        f"../../{CAUSAL_FILE}",
        f"../../{CONCEPTS_FILE}",
    )
    makes: ClassVar[tuple[str, ...]] = (FAITHFULNESS_FILE, SANITY_FILE)

    default_k: int
    sanity: bool
    n_images: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"analysis.steps.faithfulness.n_images must be >= 1, got {self.n_images}")
        if self.default_k < 1:
            raise ValueError(f"analysis.steps.faithfulness.default_k must be >= 1, got {self.default_k}")

    def run(self, context: Context) -> StepResult:
        return run_faithfulness(context, self)


def run_faithfulness(context: Context, options: FaithfulnessOptions) -> StepResult:
    """Write the variant's faithfulness.csv (when its object_ratios.csv and the run's causal.csv exist; with
    the concept rows when the run has concepts.csv) and sanity.csv (when options.sanity)."""
    variant, run_dir, out = context.variant, Path(context.run_dir), context.out
    result = StepResult()
    ratios, causal = out / RATIOS_FILE, run_dir / CAUSAL_FILE
    missing = [p.name for p in (ratios, causal) if not p.is_file()]
    if missing:
        log.warning("faithfulness skipped: %s has no %s", run_dir, " or ".join(missing))
    else:
        attribution, concepts = out / ATTRIBUTION_FILE, run_dir / CONCEPTS_FILE
        table = write_faithfulness(
            pd.read_csv(ratios),
            pd.read_csv(causal),
            out,
            variant.threshold,
            context.test.describe().get("planted"),
            options.default_k,
            (str(ratios), str(causal)),
            pd.read_csv(attribution) if is_attribution(variant.explainer) and attribution.is_file() else None,
            pd.read_csv(concepts) if concepts.is_file() else None,
        )
        result.tables["faithfulness"] = table
        result.files.append(out / FAITHFULNESS_FILE)
        scores = (
            f"{r.city} ({r.method}{', ' + r.statistic if 'statistic' in table else ''}) rho={r.spearman:.2f} "
            f"P@{r.k}={r.p_at_k:.2f}"
            for r in table.itertuples()
        )
        log.info("faithfulness: %s", ", ".join(scores))
    if options.sanity and getattr(EXPLAINERS[variant.explainer], "needs_labels", False):
        log.info("sanity check skipped: %s perturbs objects through label maps", variant.explainer)
    elif options.sanity:
        images, labels, _ = sanity_sample(context.test, options.n_images, options.seed)
        network = context.network
        attribution = is_attribution(variant.explainer)
        layer = network if attribution else resolve_target_layer(network, variant.layer)[0]
        with torch.inference_mode(False):
            result.tables["sanity"] = write_sanity(
                network,
                layer,
                images,
                labels if variant.target == "label" else None,
                out,
                variant.explainer,
                options.seed,
                options.batch_size,
                dict(variant.options),
            )
        result.files.append(out / SANITY_FILE)
    return result
