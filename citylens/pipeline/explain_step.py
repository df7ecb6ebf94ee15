"""The explain step of a run's analysis: mask store, t-SNE map, Figures 3, 4 and 6 of one variant."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from citylens import figures
from citylens.analysis.embedding import embed_masks
from citylens.core.faults import kill_point
from citylens.core.io import write_csv
from citylens.explain.explanation import explain
from citylens.explain.methods import EXPLAINERS
from citylens.explain.store import STORE_DIR, MaskStore
from citylens.pipeline.context import Context, SplitData, StepResult
from citylens.pipeline.masks import (
    check_scenes,
    compute_maps,
    reusable_store,
    sample_indices,
    store_provenance,
    write_variant_store,
)
from citylens.pipeline.steps import StepOptions
from citylens.pipeline.variant import Variant

log = logging.getLogger("citylens.analysis")


@dataclass(frozen=True)
class ExplainOptions(StepOptions):
    """The explain step (conf/analysis/steps/explain.yaml says what each setting does): masks of every test
    image into the variant's store, the t-SNE map (tsne.csv) and Figures 3, 4 and 6."""

    name: ClassVar[str] = "explain"
    makes: ClassVar[tuple[str, ...]] = (f"{STORE_DIR}/meta.json", "tsne.csv")

    batch_size: int
    tsne_side: int
    pca_dims: int
    perplexity: float
    thumbnails: int
    examples_per_city: int
    seed: int

    def __post_init__(self) -> None:
        for key in ("batch_size", "tsne_side", "pca_dims"):
            if getattr(self, key) < 1:
                raise ValueError(f"analysis.steps.explain.{key}: must be >= 1, got {getattr(self, key)}")

    def run(self, context: Context) -> StepResult:
        return run_explain(context, self)


def needs_label_maps(variant: Variant) -> bool:
    """Does the variant's explainer perturb objects through the label maps (occlusion, shapley)?"""
    return bool(getattr(EXPLAINERS[variant.explainer], "needs_labels", False))


def explainer_label_maps(context: Context, batch_size: int) -> Any:
    """The test split's label maps when the variant's explainer needs them, else None (an explainer that
    renders scenes is refused on non-synthetic data first, before any segmenting)."""
    check_scenes(context.variant.explainer, context.test)
    if not needs_label_maps(context.variant):
        return None
    labels = context.label_maps(f"explainer {context.variant.explainer}", batch_size)
    if labels is None:
        raise ValueError(f"explainer {context.variant.explainer}: the test images have no label maps")
    return labels


def run_explain(context: Context, options: ExplainOptions) -> StepResult:
    """Masks of every test image (unless the context holds them, e.g. gathered under DDP) into the variant's
    store, reusing a store already there with the same provenance and images; then the t-SNE map (tsne.csv)
    and Figures 3, 4 and 6 under the variant's folder."""
    data, variant, out = context.test, context.variant, context.out
    provenance = store_provenance(context)
    store = reusable_store(out, provenance, data.ids)
    if store is not None:
        log.info("mask store of the same checkpoint already written, kept: %s", store.path)
    else:
        maps = context.maps
        if maps is None:
            labels = explainer_label_maps(context, options.batch_size)
            maps = compute_maps(context, options.batch_size, labels=labels)
        store = write_variant_store(context, maps, provenance)
    log.info("mask store: %d masks (%s) -> %s", len(store), store.low_res.shape[1:], store.path)
    kill_point("analysis")
    started = time.monotonic()
    log.info("t-SNE of %d masks (PCA to %d dims)...", len(store), options.pca_dims)
    coords = embed_masks(
        (m for _, m in store.chunks(512)),
        options.tsne_side,
        options.pca_dims,
        options.perplexity,
        options.seed,
    )
    log.info("t-SNE done in %.1f s", time.monotonic() - started)
    table = pd.DataFrame(
        {
            "image_id": store.image_ids,
            "city": store.cities,
            "predicted": [data.cities[i] for i in store.preds],
            "probability": store.probs.max(1),
            "x": coords[:, 0],
            "y": coords[:, 1],
        }
    )
    write_csv(table, out / "tsne.csv")
    name = f"{context.arch}-s{context.run_seed} {variant.explainer}@{variant.layer}"
    paths = {
        "fig3_tsne": figures.save(
            figures.tsne_scatter(coords, store.targets, data.cities, f"{name}: t-SNE of masks (Fig. 3)"),
            out / "figures" / "fig3_tsne.png",
        ),
        "fig4_explanations": _figure4(store, data, coords, out, name, variant, options),
        "fig6_examples": _figure6(store, data, out, name, variant, options),
    }
    files = [*sorted((out / STORE_DIR).iterdir()), out / "tsne.csv", *paths.values()]
    return StepResult(files, {"tsne": table}, paths, (table, store))


def _figure4(
    store: MaskStore,
    data: SplitData,
    coords: np.ndarray,
    out: Path,
    name: str,
    variant: Variant,
    options: ExplainOptions,
) -> Path:
    rng = np.random.default_rng(options.seed)
    chosen = np.sort(rng.permutation(len(store))[: options.thumbnails])
    thumbs = []
    for i in range(0, len(chosen), 128):
        idx = chosen[i : i + 128]
        masks = torch.cat([store.masks(j, j + 1) for j in idx]).numpy()
        explained = torch.from_numpy(explain(data.views(idx), masks, variant.threshold))
        small = F.interpolate(explained.permute(0, 3, 1, 2).float(), size=48, mode="area")
        thumbs.append(small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
    fig = figures.tsne_thumbnails(
        coords[chosen],
        np.concatenate(thumbs),
        store.targets[chosen],
        data.cities,
        f"{name}: {len(chosen)} explanations at t-SNE places (Fig. 4)",
    )
    return figures.save(fig, out / "figures" / "fig4_explanations.png")


def _figure6(
    store: MaskStore, data: SplitData, out: Path, name: str, variant: Variant, options: ExplainOptions
) -> Path:
    idx = sample_indices(store.targets, options.examples_per_city, options.seed)
    masks = torch.cat([store.masks(j, j + 1) for j in idx]).numpy()
    titles = [
        f"{store.image_ids[j].rsplit('/', 1)[-1]}\n{store.cities[j]} -> "
        f"{data.cities[store.preds[j]]} ({store.probs[j].max():.2f})"
        for j in idx
    ]
    fig = figures.example_grid(
        data.views(idx), masks, variant.threshold, titles, f"{name}: sample test images (Fig. 6)"
    )
    return figures.save(fig, out / "figures" / "fig6_examples.png")
