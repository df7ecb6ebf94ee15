"""After fit: the causal importance of objects for the network -> <run>/causal.csv and, on synthetic data,
<run>/causal_agreement.csv (citylens.pipeline.causal_step; docs/causal.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from citylens.analysis.causal import METHODS, causal_agreement, check_fill
from citylens.callbacks.base import AnalysisCallback, log, log_artifacts
from citylens.core.io import write_csv
from citylens.pipeline.causal_step import causal_effects, causal_probes, is_synthetic
from citylens.pipeline.masks import sample_indices
from citylens.pipeline.objects_step import label_maps
from citylens.segment import GroundTruthSegmenter, Segmenter


class CausalCallback(AnalysisCallback):
    """Writes causal.csv (counterfactual on synthetic data, deletion where enabled) and causal_agreement.csv.

    enabled: None = on for synthetic data, off for real data; True / False force it. methods: which of
    `counterfactual` (synthetic only) and `deletion` to run; None = both on synthetic data, deletion on real
    data. max_images: test images used (None = all), a fixed per-city sample shared by every run of a sweep.
    """

    def __init__(
        self,
        segmenter: Segmenter | None = None,
        enabled: bool | None = None,
        methods: Sequence[str] | None = None,
        max_images: int | None = None,
        fill: str = "mean",
        blur_sigma: float = 0.1,
        min_share: float = 0.001,
        batch_size: int = 256,
        bf16: bool = False,
        workers: int = 0,
        label_batch_size: int = 64,
        n_boot: int = 1000,
        seed: int = 0,
        cache_dir: str = "data_cache",
    ) -> None:
        unknown = set(methods or ()) - set(METHODS)
        if unknown:
            raise ValueError(
                f"callbacks.causal.methods: {sorted(unknown)} unknown; choose from {list(METHODS)}"
            )
        if max_images is not None and max_images < 1:
            raise ValueError(f"callbacks.causal.max_images: must be positive or null, got {max_images}")
        self.segmenter, self.enabled = segmenter, enabled
        self.methods = None if methods is None else list(methods)
        self.max_images, self.fill, self.blur_sigma = max_images, check_fill(fill), blur_sigma
        self.min_share, self.batch_size, self.label_batch_size = min_share, batch_size, label_batch_size
        self.workers, self.bf16 = workers, bf16
        self.n_boot, self.seed, self.cache_dir = n_boot, seed, Path(cache_dir)

    def indices(self, datamodule: Any) -> np.ndarray:
        """Test images analysed: all, or `max_images` split evenly over the cities (fixed by the split)."""
        targets = datamodule.targets("test")
        if self.max_images is None or self.max_images >= len(targets):
            return np.arange(len(targets))
        return sample_indices(targets, max(1, self.max_images // datamodule.num_classes), self.seed)

    def analyse(self, module: pl.LightningModule, datamodule: Any, run_dir: Path, loggers: list[Any]) -> None:
        synthetic = is_synthetic(datamodule)
        if not (synthetic if self.enabled is None else self.enabled):
            return
        methods = self.methods or (list(METHODS) if synthetic else ["deletion"])
        if "counterfactual" in methods and not synthetic:
            raise ValueError("callbacks.causal.methods: counterfactual needs synthetic data; use deletion")
        indices = self.indices(datamodule)
        labels = self._labels(datamodule) if "deletion" in methods else None
        if labels is None:
            methods = [m for m in methods if m != "deletion"]
        if not methods:
            return
        probes = causal_probes(
            datamodule, indices, methods, labels, self.fill, self.blur_sigma, self.min_share, self.workers
        )
        table, _ = causal_effects(
            module, probes, self.batch_size, self.n_boot, self.seed, len(indices), self.bf16
        )
        write_csv(table, run_dir / "causal.csv")
        logged = {"causal": table}
        if set(methods) == set(METHODS):
            of = {m: table[table["method"] == m] for m in METHODS}
            agreement = causal_agreement(of["counterfactual"], of["deletion"])
            write_csv(agreement, run_dir / "causal_agreement.csv")
            logged["causal_agreement"] = agreement
            log.info(
                "deletion vs counterfactual: Spearman %.3f over %d (city, object)",
                agreement["spearman"][0],
                agreement["n_pairs"][0],
            )
        for city, rows in table[table["method"] == methods[0]].groupby("city"):
            top = ", ".join(f"{r.object} {r.effect:+.3f}" for r in rows.head(3).itertuples())
            log.info("causal (%s) %s: %s", methods[0], city, top)
        log_artifacts(loggers, tables=logged)

    def _labels(self, datamodule: Any) -> Any:
        """The test split's label maps (shared cache), or None when the ground truth has none to give."""
        if self.segmenter is None:
            raise ValueError("callbacks.causal.segmenter: deletion needs a segmenter (e.g. ${segmenter})")
        if isinstance(self.segmenter, GroundTruthSegmenter):
            unlabelled = [r.image_id for r in datamodule.splits["test"] if r.label_path is None]
            if unlabelled:
                log.warning(
                    "causal deletion skipped: %d test images have no label map (e.g. %s)",
                    len(unlabelled),
                    unlabelled[0],
                )
                return None
        return label_maps(self.segmenter, datamodule, self.cache_dir, self.label_batch_size)
