"""The causal step of a run's analysis (docs/causal.md): counterfactual scenes on synthetic data (the
generator draws each test image again without one object), deletion by label map on any data (the object's
pixels filled), measured through the trained network -> causal.csv and, on synthetic data, the agreement of
the two -> causal_agreement.csv. Both are network-level artefacts (no explainer involved). Plain functions on
a network and a data module, for the callback, `citylens-analyze` and notebooks alike.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from citylens.analysis.causal import (
    METHODS,
    Predict,
    Probe,
    causal_agreement,
    causal_table,
    check_fill,
    delete_objects,
    measure,
    present_objects,
)
from citylens.analysis.faithfulness import CAUSAL_FILE
from citylens.core.ade20k import ADE20K_CLASSES, class_name
from citylens.core.io import write_csv
from citylens.core.view import to_input
from citylens.core.workers import worker_pool
from citylens.data.synthetic import SyntheticCities
from citylens.data.synthetic.counterfactuals import (
    CACHE_FOLDER,
    CounterfactualCache,
    as_view,
    render_job,
    single_removals,
)
from citylens.pipeline.context import Context, SplitData, StepResult, data_root, is_synthetic
from citylens.pipeline.masks import balanced_sample
from citylens.pipeline.steps import RUN, StepOptions

__all__ = ["METHODS", "CausalOptions", "as_view", "causal_agreement", "run_causal"]

log = logging.getLogger("citylens.analysis")


def network_predictor(module: torch.nn.Module, bf16: bool = False) -> Predict:
    """uint8 (N, S, S, 3) analysis views -> (N, C) float32 class probabilities from `module` (eval mode).

    bf16: run the network under bfloat16 autocast (the probabilities move by up to a few 1e-3, far inside the
    effects' bootstrap intervals); faster on GPUs, no faster in the whole causal analysis on the development
    CPU (bench/bench_causal.py).
    """
    device = next(module.parameters()).device

    def predict(views: np.ndarray) -> np.ndarray:
        x = to_input(torch.from_numpy(views).permute(0, 3, 1, 2).to(device))
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return module(x).float().softmax(1).cpu().numpy()

    return predict


def _rendered(
    data: SplitData, indices: Sequence[int], workers: int, render_cache: Path | None = None
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Per test image (in order), its optional objects and its views without each of them.

    render_cache: a folder of counterfactual caches (citylens.data.synthetic.counterfactuals): the views are
    rendered into it once per dataset (by `workers` processes; 0: here) and read from it by every later run.
    None: rendered now, ahead of the network by `workers` processes.
    """
    root, size = str(data_root(data)), data.input_size
    requests = single_removals(SyntheticCities(root), [data.records[i].image_id for i in indices])
    if render_cache is not None:
        cache = CounterfactualCache(render_cache, data.fingerprint, size, requests)
        cache.build(root, workers)
        for _, removals, views in cache.views():
            yield [name for removal in removals for name in removal], views
        return
    jobs = [(root, image_id, removals, size) for image_id, removals in requests]
    with worker_pool(workers) if workers > 0 else contextlib.nullcontext() as pool:
        rendered = pool.imap(render_job, jobs, chunksize=4) if pool is not None else map(render_job, jobs)
        for (_, removals), views in zip(requests, rendered):
            yield [name for removal in removals for name in removal], views


def causal_probes(
    data: SplitData,
    indices: Sequence[int],
    methods: Sequence[str],
    labels: Any = None,
    fill: str = "mean",
    blur_sigma: float = 0.1,
    min_share: float = 0.001,
    workers: int = 0,
    render_cache: Path | None = None,
) -> Iterator[Probe]:
    """Per test image (index into the test split): the image, then its variants for each method.

    counterfactual (synthetic data: the data module's `root` holds the generated dataset): the image rendered
    again without each optional object it contains, by `workers` processes (0: in this process), through the
    counterfactual cache in the folder `render_cache` when given (rendered once per dataset), else while the
    network runs. deletion: per ADE20K class covering at least `min_share` of its label map (`labels[i]`,
    (S, S) in the analysis view), the image with that class's pixels filled; when both run, deletion takes
    the counterfactual's objects only, so the two measure the same pairs.
    """
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise ValueError(f"methods: {sorted(unknown) or 'none'}; choose from {list(METHODS)}")
    if "deletion" in methods and labels is None:
        raise ValueError("deletion needs the test images' label maps (labels=...)")
    rendered = _rendered(data, indices, workers, render_cache) if "counterfactual" in methods else None
    for i in indices:
        record = data.records[i]
        view = data.views([i])[0]
        views, objects, kinds = [view[None]], [], []
        if rendered is not None:
            present, cf_views = next(rendered)
            views.append(cf_views)
            objects, kinds = list(present), ["counterfactual"] * len(present)
        if "deletion" in methods:
            label = np.asarray(labels[i])
            classes = present_objects(label, ADE20K_CLASSES, int(np.ceil(min_share * label.size)))
            if rendered is not None:
                classes = [c for c in classes if class_name(c) in objects]
            masks = label[None] == np.array(classes, dtype=np.uint8)[:, None, None]
            views.append(delete_objects(view, masks, fill, blur_sigma))
            objects += [class_name(c) for c in classes]
            kinds += ["deletion"] * len(classes)
        target = data.cities.index(record.city)
        yield Probe(int(i), record.city, target, record.place, objects, kinds, np.concatenate(views))


def causal_effects(
    module: torch.nn.Module,
    probes: Iterator[Probe],
    batch_size: int = 256,
    n_boot: int = 1000,
    seed: int = 0,
    total: int | None = None,
    bf16: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per (method, city, object) table, per (image, method, object) rows), from the module in eval mode."""
    was_training = module.training
    module.eval()
    try:
        rows = measure(
            tqdm(probes, desc="causal", total=total, unit="img"), network_predictor(module), batch_size
        )
    finally:
        module.train(was_training)
    return causal_table(rows, n_boot=n_boot, seed=seed), rows


@dataclass(frozen=True)
class CausalOptions(StepOptions):
    """The causal step (conf/analysis/steps/causal.yaml says what each setting does); checked when made.

    enabled: None = on for synthetic data, off for real data. methods: None = both on synthetic data,
    deletion on real data. max_images: test images used (None = all), a per-city sample fixed by the split.
    render_cache: counterfactual views through the shared cache under the cache folder (rendered once per
    dataset). A step of the run: causal.csv is the network's, shared by every variant.
    """

    name: ClassVar[str] = "causal"
    makes: ClassVar[tuple[str, ...]] = (CAUSAL_FILE, "causal_agreement.csv")
    scope: ClassVar[str] = RUN

    enabled: bool | None
    methods: tuple[str, ...] | None
    max_images: int | None
    fill: str
    blur_sigma: float
    min_share: float
    batch_size: int
    bf16: bool
    workers: int
    label_batch_size: int
    n_boot: int
    seed: int
    render_cache: bool

    def run(self, context: Context) -> StepResult:
        return run_causal(context, self)

    def __post_init__(self) -> None:
        if self.methods is not None:
            object.__setattr__(self, "methods", tuple(self.methods))
        unknown = set(self.methods or ()) - set(METHODS)
        if unknown:
            raise ValueError(
                f"analysis.steps.causal.methods: {sorted(unknown)} unknown; choose from {list(METHODS)}"
            )
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(
                f"analysis.steps.causal.max_images: must be positive or null, got {self.max_images}"
            )
        try:
            check_fill(self.fill)
        except ValueError as err:
            raise ValueError(f"analysis.steps.causal.{err}") from None


def causal_indices(data: SplitData, max_images: int | None, seed: int) -> np.ndarray:
    """Test images analysed: all, or `max_images` split evenly over the cities (fixed by the split)."""
    targets = data.targets()
    if max_images is None or max_images >= len(targets):
        return np.arange(len(targets))
    return balanced_sample(targets, max_images, data.num_classes, seed)


def run_causal(context: Context, options: CausalOptions) -> StepResult:
    """Write <run>/causal.csv and, when both methods ran, causal_agreement.csv (nothing when the step is off
    for this data). Deletion needs the context's segmenter for the test label maps."""
    data, run_dir = context.test, Path(context.run_dir)
    synthetic = is_synthetic(data)
    if not (synthetic if options.enabled is None else options.enabled):
        return StepResult()
    methods = list(options.methods or (METHODS if synthetic else ["deletion"]))
    if "counterfactual" in methods and not synthetic:
        raise ValueError("analysis.steps.causal.methods: counterfactual needs synthetic data; use deletion")
    labels = None
    if "deletion" in methods:
        if context.segmenter is None:
            raise ValueError("analysis.steps.causal: deletion needs a segmenter (segmenter=...)")
        labels = context.label_maps("causal deletion", options.label_batch_size)
        if labels is None:
            methods.remove("deletion")
    if not methods:
        return StepResult()
    indices = causal_indices(data, options.max_images, options.seed)
    probes = causal_probes(
        data,
        indices,
        methods,
        labels,
        options.fill,
        options.blur_sigma,
        options.min_share,
        options.workers,
        Path(context.cache_dir) / CACHE_FOLDER if options.render_cache else None,
    )
    table, _ = causal_effects(
        context.network, probes, options.batch_size, options.n_boot, options.seed, len(indices), options.bf16
    )
    write_csv(table, run_dir / CAUSAL_FILE)
    result = StepResult([run_dir / CAUSAL_FILE], {"causal": table})
    if set(methods) == set(METHODS):
        of = {m: table[table["method"] == m] for m in METHODS}
        agreement = causal_agreement(of["counterfactual"], of["deletion"])
        write_csv(agreement, run_dir / "causal_agreement.csv")
        result.files.append(run_dir / "causal_agreement.csv")
        result.tables["causal_agreement"] = agreement
        log.info(
            "deletion vs counterfactual: Spearman %.3f over %d (city, object)",
            agreement["spearman"][0],
            agreement["n_pairs"][0],
        )
    for city, rows in table[table["method"] == methods[0]].groupby("city"):
        top = ", ".join(f"{r.object} {r.effect:+.3f}" for r in rows.head(3).itertuples())
        log.info("causal (%s) %s: %s", methods[0], city, top)
    return result
