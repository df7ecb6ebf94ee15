"""The explain step of a run's analysis: mask store, t-SNE map, Figures 3, 4 and 6 of one variant."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from citylens import figures
from citylens.analysis.embedding import embed_masks
from citylens.core.io import write_csv
from citylens.core.view import to_input
from citylens.data.synthetic import SyntheticCities
from citylens.explain.explanation import explain
from citylens.explain.methods import EXPLAINERS
from citylens.explain.store import MaskStore
from citylens.faults import kill_point
from citylens.pipeline.causal_step import as_view, is_synthetic
from citylens.pipeline.masks import (
    compute_maps,
    reusable_store,
    sample_indices,
    store_provenance,
    write_variant_store,
)
from citylens.pipeline.variant import Variant

log = logging.getLogger("citylens.analysis")


@dataclass(frozen=True)
class ExplainOptions:
    """Batch size of the masks, t-SNE settings (side of the resampled masks, PCA dims, perplexity), the number
    of Figure 4 thumbnails and Figure 6 examples per city, and the seed of t-SNE and of the sample choice."""

    batch_size: int = 64
    tsne_side: int = 32
    pca_dims: int = 50
    perplexity: float = 30.0
    thumbnails: int = 500
    examples_per_city: int = 3
    seed: int = 0


@dataclass
class ExplainResult:
    """What the explain step wrote: the store, the t-SNE table and the figure paths by key."""

    store: MaskStore
    tsne: pd.DataFrame
    figures: dict[str, Path]


def test_views(datamodule: Any, indices: np.ndarray) -> np.ndarray:
    """uint8 (n, S, S, 3) analysis views of the test images at `indices` (split order)."""
    views = datamodule.cache.images()
    records = datamodule.splits["test"]
    return np.stack([views[datamodule.row[records[i].image_id]] for i in indices])


def empty_scene_inputs(datamodule: Any, first: int, n: int) -> torch.Tensor:
    """Network inputs (n, 3, S, S) of test images first:first+n rendered again by the synthetic generator
    without any of their removable objects, as the causal step brings a rendering into the analysis view."""
    if not is_synthetic(datamodule):
        raise ValueError("explainer.options.baseline: 'empty' needs synthetic data (the generator's scenes)")
    scenes = SyntheticCities(datamodule.root)
    views = []
    for record in datamodule.splits["test"][first : first + n]:
        present, _ = scenes.contents(record.image_id)
        rgb, _ = scenes.render(record.image_id, remove=present)
        views.append(as_view(rgb, datamodule.input_size))
    return to_input(torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2))


def needs_label_maps(variant: Variant) -> bool:
    """Does the variant's explainer perturb objects through the label maps (occlusion, shapley)?"""
    return bool(getattr(EXPLAINERS[variant.explainer], "needs_labels", False))


def run_explain(
    network: nn.Module,
    arch: str,
    variant: Variant,
    datamodule: Any,
    run_dir: Path,
    run_seed: int | None,
    checkpoint: str | None,
    options: ExplainOptions = ExplainOptions(),
    maps: tuple[np.ndarray, np.ndarray] | None = None,
    labels: Any = None,
) -> ExplainResult:
    """Masks of every test image (unless `maps` are given, e.g. gathered under DDP) into the variant's store,
    reusing a store already there with the same provenance and images; then the t-SNE map (tsne.csv) and
    Figures 3, 4 and 6 under the variant's folder. `labels`: the test split's label maps, which an object
    explainer needs (`needs_label_maps`)."""
    provenance = store_provenance(variant, datamodule, arch, run_seed, checkpoint)
    out = variant.dir(run_dir)
    store = reusable_store(out, provenance, [r.image_id for r in datamodule.splits["test"]])
    if store is not None:
        log.info("mask store of the same checkpoint already written, kept: %s", store.path)
    else:
        if maps is None:
            maps = compute_maps(
                network,
                arch,
                variant,
                datamodule,
                options.batch_size,
                labels=labels,
                empty_scenes=empty_scene_inputs,
            )
        store = write_variant_store(variant, run_dir, datamodule, maps, provenance)
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
            "predicted": [datamodule.cities[i] for i in store.preds],
            "probability": store.probs.max(1),
            "x": coords[:, 0],
            "y": coords[:, 1],
        }
    )
    write_csv(table, out / "tsne.csv")
    name = f"{arch}-s{run_seed} {variant.explainer}@{variant.layer}"
    paths = {
        "fig3_tsne": figures.save(
            figures.tsne_scatter(
                coords, store.targets, datamodule.cities, f"{name}: t-SNE of masks (Fig. 3)"
            ),
            out / "figures" / "fig3_tsne.png",
        ),
        "fig4_explanations": _figure4(store, datamodule, coords, out, name, variant, options),
        "fig6_examples": _figure6(store, datamodule, out, name, variant, options),
    }
    return ExplainResult(store, table, paths)


def _figure4(
    store: MaskStore,
    datamodule: Any,
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
        explained = torch.from_numpy(explain(test_views(datamodule, idx), masks, variant.threshold))
        small = F.interpolate(explained.permute(0, 3, 1, 2).float(), size=48, mode="area")
        thumbs.append(small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
    fig = figures.tsne_thumbnails(
        coords[chosen],
        np.concatenate(thumbs),
        store.targets[chosen],
        datamodule.cities,
        f"{name}: {len(chosen)} explanations at t-SNE places (Fig. 4)",
    )
    return figures.save(fig, out / "figures" / "fig4_explanations.png")


def _figure6(
    store: MaskStore, datamodule: Any, out: Path, name: str, variant: Variant, options: ExplainOptions
) -> Path:
    idx = sample_indices(store.targets, options.examples_per_city, options.seed)
    masks = torch.cat([store.masks(j, j + 1) for j in idx]).numpy()
    titles = [
        f"{store.image_ids[j].rsplit('/', 1)[-1]}\n{store.cities[j]} -> "
        f"{datamodule.cities[store.preds[j]]} ({store.probs[j].max():.2f})"
        for j in idx
    ]
    fig = figures.example_grid(
        test_views(datamodule, idx), masks, variant.threshold, titles, f"{name}: sample test images (Fig. 6)"
    )
    return figures.save(fig, out / "figures" / "fig6_examples.png")
