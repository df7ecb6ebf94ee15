"""Masks of a run's test split for one analysis variant, into the variant's mask store.

Plain functions over an analysis context (citylens.pipeline.context): no Lightning inside, so a notebook can
run them on a loaded checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import citylens
from citylens.core.layers import layer_presets
from citylens.core.records import ImageRecord
from citylens.core.view import to_input
from citylens.data.synthetic import SyntheticCities
from citylens.data.synthetic.counterfactuals import CACHE_FOLDER, CounterfactualCache, Removal, as_view
from citylens.explain.methods import EXPLAINERS, build_explainer
from citylens.explain.store import STORE_DIR, MaskStore, StoreError, open_store, write_store
from citylens.pipeline.context import Context, SplitData, data_root, is_synthetic
from citylens.pipeline.variant import Variant


def sample_indices(targets: np.ndarray, per_city: int, seed: int = 0) -> np.ndarray:
    """Indices of `per_city` test images of each city, fixed by the split (same for every run of a sweep)."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:per_city] for c in np.unique(targets)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def balanced_sample(targets: np.ndarray, n_images: int, n_cities: int, seed: int = 0) -> np.ndarray:
    """About `n_images` images split evenly over `n_cities` cities (at least one each), fixed by the split."""
    return sample_indices(targets, max(1, n_images // max(1, n_cities)), seed)


def shard_bounds(n: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous share [start, stop) of n test images, in whole batches.

    Shares start at multiples of `batch_size`, so every image is explained in the same batch as in a
    single process and the gathered maps are bit-identical to a single-process run.
    """
    n_batches = -(-n // batch_size)
    per_rank = -(-n_batches // world_size) * batch_size
    start = min(n, rank * per_rank)
    return start, min(n, start + per_rank)


def explainer_for(variant: Variant, network: nn.Module, batch_size: int = 64) -> Any:
    """The variant's explainer of `network` at the variant's layer (a preset of its architecture or a dotted
    path), with the variant's options; an attribution explainer runs at most `batch_size` inputs per forward
    pass."""
    return build_explainer(
        variant.explainer,
        network,
        variant.layer,
        options=dict(variant.options),
        internal_batch_size=batch_size,
    )


def compute_maps(
    context: Context, batch_size: int, start: int = 0, stop: int | None = None, labels: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution maps (n, h, w) and class probabilities (n, C) of test images start:stop.

    With `variant.target == "label"` each image's true city is explained, else its predicted city. An
    attribution explainer's maps are signed, at the input's resolution; an object explainer needs the test
    split's label maps (`labels`, indexed like the split), integrated gradients with baseline `empty` the
    synthetic generator's scenes without their objects (empty_scene_inputs).
    """
    variant, data, network = context.variant, context.test, context.network
    explainer = explainer_for(variant, network, batch_size)
    if getattr(explainer, "needs_labels", False) and labels is None:
        raise ValueError(f"explainer {variant.explainer}: needs the test images' label maps (a segmenter)")
    check_scenes(variant.explainer, data)
    cache_root = Path(context.cache_dir) / CACHE_FOLDER
    stop = len(data.records) if stop is None else stop
    true_cities = data.targets()
    device = next(network.parameters()).device
    maps_parts, prob_parts = [], []
    with torch.inference_mode(False):
        for first, views, _ in tqdm(
            data.batches(batch_size, start, stop),
            desc=f"masks ({variant.explainer})",
            total=-(-max(stop - start, 0) // batch_size),
            unit="batch",
        ):
            n = len(views)
            targets = true_cities[first : first + n] if variant.target == "label" else None
            extra = {}
            if getattr(explainer, "needs_labels", False):
                extra["labels"] = torch.from_numpy(np.array(labels[first : first + n]))
            if getattr(explainer, "needs_empty", False):
                extra["baselines"] = empty_scene_inputs(data, first, n).to(device)
            if getattr(explainer, "needs_scenes", False):
                extra["scenes"] = CachedScenes(data, data.records[first : first + n], cache_root)
            maps, logits = explainer.low_res(to_input(views.to(device)), targets, **extra)
            maps_parts.append(maps.cpu().numpy())
            prob_parts.append(logits.float().softmax(1).cpu().numpy())
    if not maps_parts:
        return np.zeros((0, 0, 0), np.float32), np.zeros((0, data.num_classes), np.float32)
    return (
        np.concatenate(maps_parts).astype(np.float32, copy=False),
        np.concatenate(prob_parts).astype(np.float32, copy=False),
    )


def empty_scene_inputs(data: SplitData, first: int, n: int) -> torch.Tensor:
    """Network inputs (n, 3, S, S) of test images first:first+n rendered again by the synthetic generator
    without any of their removable objects, as the causal step brings a rendering into the analysis view."""
    if not is_synthetic(data):
        raise ValueError("explainer.options.baseline: 'empty' needs synthetic data (the generator's scenes)")
    scenes = SyntheticCities(data_root(data))
    views = []
    for record in data.records[first : first + n]:
        present, _ = scenes.contents(record.image_id)
        rgb, _ = scenes.render(record.image_id, remove=present)
        views.append(as_view(rgb, data.input_size))
    return to_input(torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2))


def check_scenes(explainer: str, data: SplitData) -> None:
    """Refuse, before any work, an explainer that renders scenes (shapley_rendered) on non-synthetic data."""
    if getattr(EXPLAINERS[explainer], "needs_scenes", False) and not is_synthetic(data):
        raise ValueError(
            f"explainer {explainer}: renders coalitions of objects with the synthetic generator, which "
            f"{data.describe().get('kind', 'this')} data does not have; use explainer=shapley (pixel fills)"
        )


class CachedScenes:
    """Synthetic test images as the generator draws them again (a SceneRenderer for RenderedShapley): every
    batch's removal sets are rendered once into the shared counterfactual cache under `cache_root` (keyed by
    the dataset fingerprint and the requests) and read from it by every later run."""

    def __init__(self, data: SplitData, records: Sequence[ImageRecord], cache_root: Path) -> None:
        self.data, self.records, self.cache_root = data, list(records), Path(cache_root)
        self.root = data_root(data)
        self.scenes = SyntheticCities(self.root)

    def objects(self) -> list[tuple[str, ...]]:
        return [tuple(self.scenes.contents(r.image_id)[0]) for r in self.records]

    def render(self, removals: Sequence[Sequence[Removal]]) -> list[torch.Tensor]:
        requests = [(r.image_id, tuple(sets)) for r, sets in zip(self.records, removals)]
        cache = CounterfactualCache(self.cache_root, self.data.fingerprint, self.data.input_size, requests)
        cache.build(self.root, progress=False)
        return [to_input(torch.from_numpy(views).permute(0, 3, 1, 2)) for _, _, views in cache.views()]


def store_provenance(context: Context) -> dict[str, Any]:
    """What a variant's mask store is computed from: network, checkpoint (path, contents), variant, data."""
    data, variant = context.test, context.variant
    return {
        "arch": context.arch,
        "seed": context.run_seed,
        "checkpoint": context.checkpoint,
        "checkpoint_sha256": context.checkpoint_sha256,
        "target_layer": layer_presets(context.network).get(variant.layer, variant.layer),
        **variant.to_dict(),
        "input_size": data.input_size,
        "dataset_fingerprint": data.fingerprint,
        "split_seed": data.split_seed,
        "split_settings": data.split_settings(),
        "citylens_version": citylens.__version__,
        "city_names": data.cities,
        "dataset": data.describe(),
    }


def reusable_store(out: Path, provenance: dict[str, Any], image_ids: list[str]) -> MaskStore | None:
    """The variant's existing mask store if it was computed from exactly this provenance and these images
    (a run killed later in its analysis keeps its masks)."""
    if not provenance.get("checkpoint_sha256"):
        return None
    try:
        store = open_store(out)
    except (StoreError, OSError, ValueError):
        return None
    same = all(_json_equal(store.meta.get(k), v) for k, v in provenance.items() if k != "checkpoint")
    return store if same and store.image_ids == image_ids else None


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as stored in JSON (tuples are lists there)."""
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def write_variant_store(
    context: Context, maps: tuple[np.ndarray, np.ndarray], provenance: dict[str, Any]
) -> MaskStore:
    """Write the variant's mask store (maps, probabilities, true cities, places, ids, provenance), open it."""
    low_res, probs = maps
    records = context.test.records
    write_store(
        context.out / STORE_DIR,
        low_res,
        probs,
        context.test.targets(),
        [r.image_id for r in records],
        [r.city for r in records],
        provenance,
        places=[r.place for r in records],
    )
    return open_store(context.out)
