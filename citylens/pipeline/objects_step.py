"""The objects step of a run's analysis: label maps, object ratios R_p^c, Figure 5, planted recovery and, for
an attribution explainer, the object attribution A_p^c."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from citylens import figures
from citylens.analysis.attribution import ATTRIBUTION_FILE, attribution_table, object_values
from citylens.analysis.ratios import RatioAccumulator, planted_recovery, ratio_summary
from citylens.core.io import write_csv
from citylens.explain.explanation import validate_threshold
from citylens.explain.methods import EXPLAINERS, is_attribution
from citylens.explain.store import STORE_DIR, MaskStore, open_store
from citylens.pipeline.context import Context, StepResult
from citylens.pipeline.steps import StepOptions
from citylens.pipeline.variant import Variant

log = logging.getLogger("citylens.analysis")


@dataclass(frozen=True)
class ObjectsOptions(StepOptions):
    """The objects step (conf/analysis/steps/objects.yaml says what each setting does): label maps, object
    ratios R_p^c, Figure 5, planted recovery and, for an attribution explainer, A_p^c."""

    name: ClassVar[str] = "objects"
    needs: ClassVar[tuple[str, ...]] = (f"{STORE_DIR}/meta.json",)
    makes: ClassVar[tuple[str, ...]] = ("object_ratios.csv", ATTRIBUTION_FILE)

    extra_thresholds: tuple[float, ...]
    min_mean_pixels: float
    batch_size: int
    n_boot: int
    seed: int

    def __post_init__(self) -> None:
        thresholds = tuple(validate_threshold(t) for t in self.extra_thresholds)
        object.__setattr__(self, "extra_thresholds", thresholds)

    def run(self, context: Context) -> StepResult:
        return run_objects(context, self)


def selected(store: MaskStore, variant: Variant) -> np.ndarray:
    """Boolean per test image: does it enter the ratios (every image, or only the correctly classified)."""
    if variant.images == "correct":
        return store.preds == store.targets
    return np.ones(len(store), dtype=bool)


def object_ratios(
    store: MaskStore,
    labels: Any,
    variant: Variant,
    thresholds: Sequence[float],
    min_mean_pixels: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """R_p^c at every threshold over the variant's images, with intervals over test places (`n_boot`
    replicates); min_mean_pixels is given at 224 px and scaled to the store's view."""
    acc = RatioAccumulator(thresholds, min_mean_pixels * (store.size / 224) ** 2)
    keep = selected(store, variant)
    cities, places = np.asarray(store.cities), np.asarray(store.places)
    for start, masks in store.chunks(256):
        stop = start + len(masks)
        rows = keep[start:stop]
        if rows.any():
            acc.update(
                masks[rows],
                np.array(labels[start:stop])[rows],
                list(cities[start:stop][rows]),
                list(places[start:stop][rows]),
            )
    return acc.table(n_boot, seed)


def object_attribution(
    store: MaskStore,
    labels: Any,
    variant: Variant,
    min_mean_pixels: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """A_p^c of the variant's images from the store's signed maps: per image and object the map's sum over
    the object (pixel explainers) or mean (object explainers), averaged per city over the images containing
    the object, with intervals over test places; min_mean_pixels is given at 224 px as for the ratios."""
    statistic = EXPLAINERS[variant.explainer].object_statistic
    keep = selected(store, variant)
    values, pixels = [], []
    for start in range(0, len(store), 256):
        stop = min(len(store), start + 256)
        rows = keep[start:stop]
        v, p = object_values(store.maps(start, stop)[rows], np.array(labels[start:stop])[rows], statistic)
        values.append(v)
        pixels.append(p)
    return attribution_table(
        np.concatenate(values),
        np.concatenate(pixels),
        np.asarray(store.cities)[keep],
        np.asarray(store.places)[keep],
        min_mean_pixels * (store.size / 224) ** 2,
        n_boot,
        seed,
    )


def run_objects(context: Context, options: ObjectsOptions) -> StepResult:
    """object_ratios.csv, ratio_summary.csv, figures/fig5_ratios.png, (synthetic) recovery.csv and, for an
    attribution explainer, object_attribution.csv in the variant's folder (a CAM variant writes what it
    always wrote). Nothing without label maps of the test images (a warning says why)."""
    variant, out = context.variant, context.out
    store = open_store(out)
    labels = context.label_maps("object ratios", options.batch_size, store)
    if labels is None:
        return StepResult()
    thresholds = sorted({variant.threshold, *options.extra_thresholds})
    table = object_ratios(
        store, labels, variant, thresholds, options.min_mean_pixels, options.n_boot, options.seed
    )
    tables = {"object_ratios": table, "ratio_summary": ratio_summary(table)}
    if is_attribution(variant.explainer):
        tables["object_attribution"] = object_attribution(
            store, labels, variant, options.min_mean_pixels, options.n_boot, options.seed
        )
    planted = context.test.describe().get("planted")
    at_threshold = None
    if planted:
        recovery = planted_recovery(table, planted)
        tables["recovery"] = recovery.assign(planted_ranks=recovery["planted_ranks"].map(str))
        at_threshold = recovery[np.isclose(recovery["threshold"], variant.threshold)]
        log.info(
            "planted-object recovery at %.2f: %s",
            variant.threshold,
            ", ".join(f"{r.city} P@{r.k}={r.precision_at_k:.2f}" for r in at_threshold.itertuples()),
        )
    files = []
    for key, frame in tables.items():
        files.append(out / (ATTRIBUTION_FILE if key == "object_attribution" else f"{key}.csv"))
        write_csv(frame, files[-1])
    name = f"{store.meta['arch']}-s{store.meta['seed']} {variant.explainer}@{variant.layer}"
    fig = figures.ratio_bars(
        table[np.isclose(table["threshold"], variant.threshold)],
        planted=planted,
        recovery=at_threshold,
        title=f"{name}: object ratios at threshold {variant.threshold} (Fig. 5)",
    )
    paths = {"fig5_ratios": figures.save(fig, out / "figures" / "fig5_ratios.png")}
    if "object_attribution" in tables:
        paths["fig5_attribution"] = attribution_figure(tables["object_attribution"], planted, name, out)
    return StepResult([*files, *paths.values()], tables, paths)


def attribution_figure(
    table: pd.DataFrame, planted: dict[str, list[str]] | None, name: str, out: Path
) -> Path:
    """Figure 5 of the object attribution A_p^c (attribution variants): figures/fig5_attribution.png, beside
    the ratios' figure, with the planted objects' recovery from the A ranking (synthetic data)."""
    recovery = None
    if planted:
        recovery = planted_recovery(
            table.rename(columns={"attribution": "ratio"}).assign(threshold=0.0), planted
        )
    fig = figures.ratio_bars(
        table,
        planted=planted,
        recovery=recovery,
        title=f"{name}: object attribution A with 95% intervals (Fig. 5)",
        value="attribution",
        xlabel="A (mean signed attribution on the object, log P units)",
    )
    return figures.save(fig, out / "figures" / "fig5_attribution.png")
