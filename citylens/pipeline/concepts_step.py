"""The concepts step of a run's analysis (docs/concepts.md): the network's own visual elements, without a
fixed vocabulary. One layer's non-negative activations are factorised with NMF into K concepts on validation
images, each test image's concept maps are found with that bank fixed, and each concept is scored per city by
the drop of log P(true city) when it is removed from the activation. Where label maps exist, each concept is
named by the object its maps concentrate on (lift); on synthetic data the name's rank in the counterfactual
effects (causal.csv) says whether the concept is one the network really uses. A step of the run, not of a
variant: no explainer is involved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from citylens.analysis.concepts import (
    EARLIER_LAYERS,
    concept_maps,
    concept_names,
    concept_objects,
    fit_concepts,
    importance_table,
    layer_activations,
    log_prob_drops,
    probability_drop,
    removal_log_probs,
    upsample_maps,
)
from citylens.analysis.faithfulness import CAUSAL_FILE
from citylens.core.io import atomic_path, atomic_write_json, write_csv
from citylens.core.layers import arch_of
from citylens.figures import concept_rows, save
from citylens.pipeline.context import Context, SplitData, StepResult
from citylens.pipeline.masks import balanced_sample
from citylens.pipeline.steps import RUN, StepOptions

log = logging.getLogger("citylens.analysis")

CONCEPTS_FILE = "concepts.csv"
CONCEPTS_DIR = "concepts"
COLUMNS = [
    "city", "concept", "n_images", "importance", "importance_low", "importance_high",
    "object", "lift", "mass_share", "causal_rank", "layer", "k", "importance_p",
]  # fmt: skip


@dataclass(frozen=True)
class ConceptsOptions(StepOptions):
    """The concepts step (conf/analysis/steps/concepts.yaml says what each setting does), checked."""

    name: ClassVar[str] = "concepts"
    needs: ClassVar[tuple[str, ...]] = (CAUSAL_FILE,)
    makes: ClassVar[tuple[str, ...]] = (
        CONCEPTS_FILE,
        f"{CONCEPTS_DIR}/meta.json",
        f"{CONCEPTS_DIR}/bank.npy",
        f"{CONCEPTS_DIR}/maps.npy",
        f"{CONCEPTS_DIR}/importance.npy",
        f"{CONCEPTS_DIR}/objects.csv",
    )
    scope: ClassVar[str] = RUN

    layer: str
    k: int
    fit_images: int
    max_locations: int
    batch_size: int
    n_boot: int
    seed: int
    min_lift: float
    figure_concepts: int
    figure_images: int

    def __post_init__(self) -> None:
        for key in ("k", "fit_images", "max_locations", "batch_size", "figure_concepts", "figure_images"):
            if getattr(self, key) < 1:
                raise ValueError(f"analysis.steps.concepts.{key}: must be >= 1, got {getattr(self, key)}")
        if not self.layer:
            raise ValueError("analysis.steps.concepts.layer: give `earlier`, a layer preset or a dotted path")

    def run(self, context: Context) -> StepResult:
        return run_concepts(context, self)


def concept_layer(layer: str, network: nn.Module) -> str:
    """The layer to factorise: `earlier` is one stage before the last convolution (EARLIER_LAYERS, for the
    network's architecture), chosen by measurement (docs/concepts.md); anything else is a preset of the
    network or a dotted path."""
    if layer != "earlier":
        return layer
    arch = arch_of(network)
    if arch is None:
        raise ValueError(
            f"analysis.steps.concepts.layer: 'earlier' is known for {list(EARLIER_LAYERS)} only, not for a "
            f"network of type {type(network).__name__}; give a dotted path"
        )
    return EARLIER_LAYERS[arch]


def _views(data: SplitData, indices: np.ndarray | range) -> torch.Tensor:
    return torch.from_numpy(data.views(indices)).permute(0, 3, 1, 2)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no suffix
        np.save(f, array)


def causal_ranks(causal: pd.DataFrame | None, table: pd.DataFrame) -> list[float]:
    """Each row's object's rank (1 = largest effect) among its city's counterfactual effects; NaN where the
    concept has no name or the object no effect."""
    if causal is None:
        return [np.nan] * len(table)
    rows = causal[causal["method"] == "counterfactual"] if "method" in causal else causal
    ranks = {}
    for city, group in rows.groupby("city"):
        ordered = group.sort_values("effect", ascending=False)["object"].tolist()
        ranks.update({(city, obj): float(i + 1) for i, obj in enumerate(ordered)})
    return [ranks.get((r.city, r.object), np.nan) for r in table.itertuples()]


def city_means(
    values: np.ndarray, targets: np.ndarray, cities: list[str], table: pd.DataFrame
) -> list[float]:
    """Each row's (city, concept) mean of per-image values (N, k) over the city's images (targets = the
    true city): the removal's mean drop of P(true city), beside the mean drop of log P in `importance`."""
    means = {
        (city, j): float(values[targets == c, j].mean())
        for c, city in enumerate(cities)
        if (targets == c).any()
        for j in range(values.shape[1])
    }
    return [means.get((r.city, r.concept), np.nan) for r in table.itertuples()]


def run_concepts(context: Context, options: ConceptsOptions) -> StepResult:
    """Fit the concept bank on the fitting split, map and score the test split; write concepts.csv, the
    concept store (concepts/) and one figure per city."""
    if context.fit is None:
        log.warning("concepts skipped: no fitting split (the validation images) in this context")
        return StepResult()
    network, test = context.network, context.test
    layer = concept_layer(options.layer, network)
    run_dir = Path(context.run_dir)
    out = run_dir / CONCEPTS_DIR
    with torch.inference_mode(False):
        split = context.fit
        picked = balanced_sample(split.targets(), options.fit_images, split.num_classes, options.seed)
        fitted_on = layer_activations(network, layer, _views(split, picked), options.batch_size)
        bank = fit_concepts(fitted_on, options.k, options.seed, options.max_locations)
        del fitted_on
        targets = test.targets()
        maps, importance, p_drops = [], [], []
        n = len(test.records)
        for start in range(0, n, options.batch_size):
            stop = min(n, start + options.batch_size)
            images = _views(test, range(start, stop))
            activations = layer_activations(network, layer, images, options.batch_size)
            part = concept_maps(activations, bank)
            logp = removal_log_probs(network, layer, images, targets[start:stop], bank, part)
            importance.append(log_prob_drops(logp))
            p_drops.append(probability_drop(importance[-1], np.exp(logp[:, 0])))
            maps.append(part.numpy())
    maps_all = np.concatenate(maps) if maps else np.zeros((0, options.k, 1, 1), np.float32)
    scores = np.concatenate(importance) if importance else np.zeros((0, options.k), np.float32)
    places = [r.place for r in test.records]
    table = importance_table(scores, targets, test.cities, places, options.n_boot, seed=options.seed)
    labels = (
        context.label_maps("concept names", options.batch_size) if context.segmenter is not None else None
    )
    objects = pd.DataFrame(columns=["concept", "object_id", "object", "mass_share", "pixel_share", "lift"])
    if labels is not None and len(maps_all):
        objects = concept_objects(maps_all, np.array(labels))
    names = concept_names(objects, options.min_lift).set_index("concept") if len(objects) else None
    for key in ("object", "lift", "mass_share"):
        table[key] = [
            names.at[c, key] if names is not None and c in names.index else None for c in table["concept"]
        ]
    causal_file = run_dir / CAUSAL_FILE
    table["causal_rank"] = causal_ranks(pd.read_csv(causal_file) if causal_file.is_file() else None, table)
    table["layer"], table["k"] = layer, options.k
    table["importance_p"] = city_means(
        np.concatenate(p_drops) if p_drops else scores, targets, test.cities, table
    )
    table = table[COLUMNS]
    _save_npy(out / "bank.npy", bank)
    _save_npy(out / "maps.npy", maps_all.astype(np.float32))
    _save_npy(out / "importance.npy", scores.astype(np.float32))
    write_csv(objects, out / "objects.csv")
    meta = {
        "layer": layer,
        "arch": context.arch,
        "k": options.k,
        "image_ids": test.ids,
        "cities": test.cities,
    }
    atomic_write_json(
        out / "meta.json", {**meta, "dataset_fingerprint": test.fingerprint, "fit_split": "val"}
    )
    write_csv(table, run_dir / CONCEPTS_FILE)
    stored = ("meta.json", "bank.npy", "maps.npy", "importance.npy", "objects.csv")
    result = StepResult([run_dir / CONCEPTS_FILE, *(out / f for f in stored)], {"concepts": table})
    for city in test.cities:
        path = city_figure(test, maps_all, table, city, options, out / "figures" / f"concepts_{city}.png")
        if path is not None:
            result.files.append(path)
            result.figures[f"concepts_{city}"] = path
    for city, rows in table.groupby("city", sort=False):
        top = rows.head(2)
        named = ", ".join(
            f"{r.concept} ({r.object or 'no object'}, {r.importance:+.3f})" for r in top.itertuples()
        )
        log.info("concepts %s: %s", city, named)
    return result


def city_figure(
    test: SplitData,
    maps: np.ndarray,
    table: pd.DataFrame,
    city: str,
    options: ConceptsOptions,
    path: Path,
) -> Path | None:
    """The city's most important concepts, each as a row of the city's test images where it is strongest,
    with its map over them."""
    of_city = np.flatnonzero(test.targets() == test.cities.index(city))
    rows = table[table["city"] == city].head(options.figure_concepts)
    if not len(of_city) or not len(rows):
        return None
    n = min(options.figure_images, len(of_city))
    strength = maps[of_city].mean(axis=(2, 3))
    picks = [of_city[np.argsort(-strength[:, c], kind="stable")[:n]] for c in rows["concept"]]
    images = np.stack([test.views(p) for p in picks])
    size = test.input_size
    up = np.stack(
        [upsample_maps(maps[p][:, [c]], size)[:, 0].numpy() for p, c in zip(picks, rows["concept"])]
    )
    up = up / np.maximum(up.max(axis=(1, 2, 3), keepdims=True), 1e-12)
    names = [r.object if isinstance(r.object, str) else "no object" for r in rows.itertuples()]
    titles = [
        f"concept {r.concept}\n{n}\nΔlog P {r.importance:+.3f}" for r, n in zip(rows.itertuples(), names)
    ]
    title = (
        f"Visual elements of {city}: its most important concepts, where they are strongest\n"
        f"(row: concept, the object it sits on, the drop of log P({city}) without it)"
    )
    return save(concept_rows(images, up, titles, title), path)
