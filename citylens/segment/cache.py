"""Label-map cache: the label maps of one dataset split under one segmenter, computed once, shared by a sweep.

Segmentation does not depend on the classifier, so every run of a sweep (and every later sweep on the same
data and segmenter) reads the same maps. A cache lives at `root/<hash of key>/`:
- `labels.npy`   uint8 (N, S, S) ADE20K indices (255 = unlabelled), written chunk by chunk via a memmap;
- `progress.json` the finished chunks (start, end, digest of their image ids), rewritten atomically after
  each chunk, so an interrupted build resumes without redoing them;
- `complete.json` written atomically last (key, image ids, shape): only then is the cache complete.
The three are one citylens.core.io.ResumableArray (as the view cache's), plus
- `.lock`        a file lock (citylens.core.io.file_lock) held while building, so a second process building
  the same cache waits and then finds it complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from citylens.core.ade20k import UNLABELLED
from citylens.core.io import ResumableArray, file_lock
from citylens.core.records import ImageRecord
from citylens.segment.base import NUM_CLASSES, Segmenter

log = logging.getLogger("citylens.segment")

Batch = tuple[int, torch.Tensor, Sequence[ImageRecord]]


def ids_digest(image_ids: Sequence[str]) -> str:
    """SHA-256 over the ordered image ids: equal digests mean the same images in the same order."""
    digest = hashlib.sha256()
    for image_id in image_ids:
        digest.update(image_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def label_cache_key(
    dataset_fingerprint: str, split: str, segmenter: Segmenter, size: int, image_ids: Sequence[str]
) -> dict[str, Any]:
    """The key of a label-map cache: what the label maps were computed from."""
    return {
        "dataset": dataset_fingerprint,
        "split": split,
        "segmenter": segmenter.identity(),
        "size": int(size),
        "n_images": len(image_ids),
        "image_ids": ids_digest(image_ids),
    }


class LabelMapCache:
    """The label maps (N, S, S) of one key, at `root/<hash of key>/` (see the module docstring)."""

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        self.key = dict(key)
        text = json.dumps(self.key, sort_keys=True, default=str)
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.dir = Path(root) / self.digest
        self.labels_path = self.dir / "labels.npy"
        self.progress_path = self.dir / "progress.json"
        self.complete_path = self.dir / "complete.json"
        self.lock_path = self.dir / ".lock"

    def __repr__(self) -> str:
        return f"LabelMapCache({self.dir})"

    def is_complete(self) -> bool:
        """True once every chunk is written and `complete.json` is in place."""
        return self.complete_path.is_file()

    def manifest(self) -> dict[str, Any]:
        """The contents of `complete.json` (key, image ids, shape, segmenter)."""
        if not self.is_complete():
            raise FileNotFoundError(
                f"label-map cache {self.dir} is incomplete (no complete.json); build it first"
            )
        return json.loads(self.complete_path.read_text())

    def image_ids(self) -> list[str]:
        """The image ids, in label-map order."""
        return list(self.manifest()["image_ids"])

    def open(self) -> np.memmap:
        """The label maps as a read-only (N, S, S) uint8 memmap; refuses an incomplete cache."""
        manifest = self.manifest()
        labels = np.load(self.labels_path, mmap_mode="r")
        if list(labels.shape) != manifest["shape"] or labels.dtype != np.uint8:
            raise RuntimeError(
                f"{self.labels_path} holds {labels.dtype} {labels.shape}, expected {manifest['shape']}"
            )
        return labels

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, labels[start:start + size]) in order, each chunk read into memory."""
        labels = self.open()
        for start in range(0, labels.shape[0], size):
            yield start, np.array(labels[start : start + size])

    def array(self, shape: Sequence[int] = ()) -> ResumableArray:
        """The resumable uint8 array of label maps; `shape` (N, S, S) is needed to write it."""
        return ResumableArray(self.dir, tuple(shape), np.uint8, name=self.labels_path.name)

    def done_ranges(self) -> list[list[int]]:
        """The merged [start, end) ranges an interrupted build has already finished."""
        if not self.progress_path.is_file():
            return []
        shape = json.loads(self.progress_path.read_text()).get("shape", ())
        return self.array(shape).done_ranges()

    def build(
        self, segmenter: Segmenter, batches: Iterable[Batch], n_images: int, progress: bool = True
    ) -> np.memmap:
        """Label every image once, resuming after finished chunks; returns `open()`.

        batches: (start index, uint8 images (n, 3, S, S) in the analysis view, their records), covering
        0..n_images-1. Batches whose range an earlier, interrupted build finished are skipped. A complete
        cache (also one another process finished while this one waited for the lock) is returned as is.
        """
        if self.is_complete():
            return self._hit()
        if n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {n_images}")
        if "segmenter" in self.key and self.key["segmenter"] != segmenter.identity():
            raise ValueError(
                f"segmenter identity {segmenter.identity()!r} differs from the cache key's "
                f"{self.key['segmenter']!r}"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path):  # a waiting process logs whose lock it waits for, and how long
            if self.is_complete():
                return self._hit()
            self._build_locked(segmenter, batches, n_images, progress)
        return self.open()

    def _hit(self) -> np.memmap:
        labels = self.open()
        log.info(
            "label-map cache hit: %s (%d images, segmenter %s)",
            self.dir,
            labels.shape[0],
            self.key.get("segmenter"),
        )
        return labels

    def _build_locked(
        self, segmenter: Segmenter, batches: Iterable[Batch], n_images: int, progress: bool
    ) -> None:
        """The build proper; the caller holds the lock."""
        shape = [n_images, segmenter.size, segmenter.size]
        if "size" in self.key and int(self.key["size"]) != segmenter.size:
            raise ValueError(
                f"segmenter size {segmenter.size} differs from the cache key's size {self.key['size']}"
            )
        array = self.array(shape)
        array.begin()
        log.info(
            "%s label-map cache %s (%d images, %d already done, segmenter %s)",
            "resuming" if array.recorded() else "building",
            self.dir,
            n_images,
            sum(b - a for a, b in array.done_ranges()),
            segmenter.identity(),
        )
        image_ids: list[str | None] = [None] * n_images
        bar = tqdm(total=n_images, unit="img", desc="label maps", disable=not progress)
        try:
            for start, images, records in batches:
                end = start + len(records)
                if start < 0 or end > n_images:
                    raise ValueError(f"batch [{start}, {end}) lies outside 0..{n_images}")
                ids = [r.image_id for r in records]
                image_ids[start:end] = ids
                digest = ids_digest(ids)
                if not array.is_done(start, end, digest):
                    chunk = segmenter(images, records)
                    self._check_chunk(chunk, end - start)
                    array.write(start, end, chunk.numpy(), digest)
                bar.update(end - start)
        finally:
            bar.close()
        done = array.done_ranges()
        if done != [[0, n_images]]:
            raise RuntimeError(
                f"batches covered {done} of [0, {n_images}): the label-map cache stays incomplete"
            )
        missing = [i for i, image_id in enumerate(image_ids) if image_id is None]
        if missing:
            raise RuntimeError(f"no records seen for images {missing[:5]}...; pass every batch to build()")
        if "image_ids" in self.key and self.key["image_ids"] != ids_digest(image_ids):
            self.progress_path.unlink(missing_ok=True)
            raise ValueError("the batches' image ids differ from those the cache key was made for")
        manifest = {
            "key": self.key,
            "shape": shape,
            "segmenter": segmenter.identity(),
            "image_ids": image_ids,
        }
        array.finish(manifest)
        log.info("label-map cache complete: %s (%d images)", self.dir, n_images)

    @staticmethod
    def _check_chunk(chunk: torch.Tensor, n: int) -> None:
        """Refuse a segmenter output that is not n uint8 maps of ADE20K indices or UNLABELLED."""
        if chunk.dtype != torch.uint8 or chunk.dim() != 3 or chunk.shape[0] != n:
            raise RuntimeError(
                f"segmenter returned {chunk.dtype} {tuple(chunk.shape)}, expected ({n}, S, S) uint8"
            )
        bad = (chunk >= NUM_CLASSES) & (chunk != UNLABELLED)
        if bool(bad.any()):
            raise RuntimeError(
                f"segmenter returned label {int(chunk[bad][0])}, not an ADE20K index or {UNLABELLED}"
            )
