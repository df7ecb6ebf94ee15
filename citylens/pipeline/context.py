"""What every step of a run's after-fit analysis reads: the network with its layer presets, a typed view of
the test data, the run folder and the analysis variant (docs/pipeline.md)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from citylens.core.io import sha256
from citylens.core.records import ImageRecord
from citylens.pipeline.variant import Variant
from citylens.segment import GroundTruthSegmenter, LabelMapCache, Segmenter, label_cache_key

log = logging.getLogger("citylens.analysis")


class SplitData(Protocol):
    """One split of a run's data in split order (citylens.data.SplitView implements it)."""

    records: Sequence[ImageRecord]
    cities: list[str]
    input_size: int
    fingerprint: str
    split_seed: int

    @property
    def ids(self) -> list[str]: ...

    @property
    def num_classes(self) -> int: ...

    def targets(self) -> np.ndarray: ...

    def views(self, indices: Sequence[int] | np.ndarray) -> np.ndarray: ...

    def batches(
        self, batch_size: int = 64, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, torch.Tensor, list[ImageRecord]]]: ...

    def describe(self) -> dict[str, Any]: ...

    def split_settings(self) -> dict[str, Any]: ...


def is_synthetic(data: SplitData) -> bool:
    """Whether the images come from the synthetic generator (counterfactual scenes possible)."""
    return data.describe().get("kind") == "synthetic"


def data_root(data: SplitData) -> Path:
    """The synthetic dataset's folder (the generator's scene files)."""
    return Path(data.describe()["root"])


@dataclass
class StepResult:
    """What a step wrote (files, for its completion record) and what the loggers get: tables, figures and,
    for the explain step, the per-image table with its mask store (the adapter adds thumbnails)."""

    files: list[Path] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    image_table: tuple[pd.DataFrame, Any] | None = None


@dataclass
class Context:
    """One run's analysis of one variant.

    network: the trained network (eval mode), which brings its layer presets (`core.layers.arch_of`); `arch`
    the architecture's name, a label for messages and the stores' metadata. test: the test
    split. run_dir: the run folder; `out` is the variant's folder under it. segmenter and cache_dir: where
    label maps come from (the shared label-map cache). run_seed and checkpoint: the run's identity, recorded
    with the masks. sweep_dir: the sweep whose finished runs the residuals compare against (None: the run's
    parent when it is a multirun folder). maps: precomputed (maps, probabilities) of the test split (under
    DDP each rank explains its share and rank 0 gets them all). fit: the split a step may fit on without
    touching the test images (the validation split: the concept bank).
    """

    network: nn.Module
    arch: str
    test: SplitData
    run_dir: Path
    variant: Variant
    segmenter: Segmenter | None = None
    cache_dir: Path = Path("data_cache")
    run_seed: int | None = None
    checkpoint: str | None = None
    sweep_dir: Path | None = None
    maps: tuple[np.ndarray, np.ndarray] | None = None
    fit: SplitData | None = None

    @property
    def out(self) -> Path:
        return self.variant.dir(self.run_dir)

    @functools.cached_property
    def checkpoint_sha256(self) -> str | None:
        """Contents of the tested checkpoint (None when there is no file)."""
        path = Path(self.checkpoint) if self.checkpoint else None
        return sha256(path) if path is not None and path.is_file() else None

    def label_maps(self, step: str, batch_size: int = 64, store: Any = None) -> Any:
        """The test split's label maps from the shared cache (segmenting only what is not cached), or None
        with a warning naming `step` when the segmenter reads stored label maps (the ground truth) and some
        test image has none: that data needs a network segmenter. With a mask `store`, refused (StoreError)
        unless the label maps are exactly the store's images in order, from the store's dataset."""
        from citylens.explain.store import check_labels_match

        if self.segmenter is None:
            raise ValueError(f"{step}: needs label maps, but no segmenter is configured (segmenter=...)")
        unlabelled = [r.image_id for r in self.test.records if r.label_path is None]
        if isinstance(self.segmenter, GroundTruthSegmenter) and unlabelled:
            log.warning(
                "%s skipped: %d test images have no stored label map (e.g. %s); choose a network segmenter "
                "(segmenter=segformer or segmenter=csail) for this dataset",
                step,
                len(unlabelled),
                unlabelled[0],
            )
            return None
        ids = self.test.ids
        if store is not None:
            check_labels_match(store, ids, self.test.fingerprint)
        key = label_cache_key(self.test.fingerprint, "test", self.segmenter, self.test.input_size, ids)
        cache = LabelMapCache(Path(self.cache_dir) / "labels", key)
        labels = cache.build(self.segmenter, self.test.batches(batch_size), len(ids))
        if store is not None:
            check_labels_match(store, cache.image_ids(), None)
        return labels
