"""Counterfactual render cache: synthetic images rendered again without given object sets, once per dataset.

A counterfactual scene depends only on the dataset (its generator settings and image) and on what is removed,
never on the network, so every run of a sweep reads the same views. A cache holds, for a list of requests
(image id, removal sets), one analysis view per (image, removal set), in request order, at
`root/<hash of key>/`; the key is the dataset fingerprint, the view size, the generator version, the JPEG
quality and a digest of the requests. Single-object removals (the causal step) and coalitions (any sets of
objects, e.g. for object Shapley values) are both requests, so each set of requests is its own cache.

Storage is citylens.core.io.ResumableArray (as the view and label-map caches): `views.npy` (M, S, S, 3)
uint8 written chunk by chunk of images, `progress.json` (an interrupted build resumes after its finished
chunks), `complete.json` (written last: the key, so a read checks the dataset fingerprint), and `.lock`, a
file lock held while building, so a second process waits and then reads the finished cache.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from citylens.core.io import ResumableArray, file_lock, read_json, short_hash
from citylens.core.view import analysis_view
from citylens.core.workers import worker_pool
from citylens.data.synthetic.config import GENERATOR_VERSION, JPEG_QUALITY
from citylens.data.synthetic.dataset import SyntheticCities

log = logging.getLogger("citylens.data")

Removal = frozenset[str]
Request = tuple[str, tuple[Removal, ...]]  # (image id, the object sets removed, one view each)

# The counterfactual caches' folder under the configured cache_dir (the causal step's and RenderedShapley's).
CACHE_FOLDER = "counterfactuals"

# Images rendered per chunk: the unit an interrupted build resumes after.
CHUNK_IMAGES = 32


def as_view(rgb: np.ndarray, size: int) -> np.ndarray:
    """A rendered image as the classifier sees its file: JPEG-encoded like the generator's files, decoded,
    brought into the analysis view."""
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, "JPEG", quality=JPEG_QUALITY)
    encoded.seek(0)
    with Image.open(encoded) as image:
        return analysis_view(image, size)


def render_views(
    scenes: SyntheticCities, image_id: str, removals: Sequence[Removal], size: int
) -> np.ndarray:
    """The image rendered once per removal set, in one renderer pass: (K, size, size, 3) analysis views."""
    if not removals:
        return np.zeros((0, size, size, 3), np.uint8)
    rendered, _ = scenes.render_variants(image_id, [set(r) for r in removals])
    return np.stack([as_view(rgb, size) for rgb in rendered])


def single_removals(scenes: SyntheticCities, image_ids: Iterable[str]) -> list[Request]:
    """Each image with each optional object it contains removed alone, in the generator's object order."""
    return [(i, tuple(frozenset([p]) for p in scenes.contents(i)[0])) for i in image_ids]


def requests_digest(requests: Sequence[Request]) -> str:
    """A digest of the requests in order (image ids and sorted removal sets)."""
    return short_hash([[image_id, [sorted(r) for r in removals]] for image_id, removals in requests], 32)


_SCENES: dict[str, SyntheticCities] = {}


def render_job(job: tuple[str, str, tuple[Removal, ...], int]) -> np.ndarray:
    """render_views of one (dataset root, image id, removal sets, size) job, in a worker process or here
    (each dataset is opened once per process)."""
    root, image_id, removals, size = job
    if root not in _SCENES:
        _SCENES[root] = SyntheticCities(root)
    return render_views(_SCENES[root], image_id, removals, size)


class CounterfactualCache:
    """The counterfactual views of `requests` on one dataset at one view size (see the module docstring)."""

    def __init__(
        self, root: Path | str, dataset_fingerprint: str, size: int, requests: Sequence[Request]
    ) -> None:
        self.requests = [(image_id, tuple(frozenset(r) for r in removals)) for image_id, removals in requests]
        self.size = int(size)
        counts = [len(removals) for _, removals in self.requests]
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(int)
        self.key: dict[str, Any] = {
            "dataset": dataset_fingerprint,
            "size": self.size,
            "generator_version": GENERATOR_VERSION,
            "jpeg_quality": JPEG_QUALITY,
            "n_images": len(self.requests),
            "n_views": int(self.offsets[-1]),
            "requests": requests_digest(self.requests),
        }
        self.dir = Path(root) / short_hash(self.key, 16)
        self.array = ResumableArray(self.dir, (self.n_views, self.size, self.size, 3), np.uint8, "views.npy")
        self.lock_path = self.dir / ".lock"

    def __repr__(self) -> str:
        return f"CounterfactualCache({self.dir})"

    @property
    def n_views(self) -> int:
        return int(self.offsets[-1])

    def is_complete(self) -> bool:
        return self.array.is_complete()

    def build(
        self,
        scenes_root: Path | str,
        workers: int = 0,
        progress: bool = True,
    ) -> None:
        """Render every view not cached yet (by `workers` processes; 0: here), resuming after finished chunks.

        A complete cache (also one another process finished while this one waited for the lock) is left as is.
        """
        if self._hit():
            return
        with file_lock(self.lock_path):
            if not self._hit():
                self._build_locked(str(scenes_root), workers, progress)

    def _hit(self) -> bool:
        """Whether the cache is complete (logged when it is)."""
        if self.is_complete():
            log.info("counterfactual cache hit: %s (%d views)", self.dir, self.n_views)
        return self.is_complete()

    def _build_locked(self, root: str, workers: int, progress: bool) -> None:
        """The build proper; the caller holds the lock."""
        array = self.array
        array.begin()
        log.info(
            "%s counterfactual cache %s (%d images, %d views, %d already done)",
            "resuming" if array.recorded() else "building",
            self.dir,
            len(self.requests),
            self.n_views,
            sum(b - a for a, b in array.done_ranges()),
        )
        chunks = [
            (a, min(a + CHUNK_IMAGES, len(self.requests))) for a in range(0, len(self.requests), CHUNK_IMAGES)
        ]
        todo = [(a, b) for a, b in chunks if not self._chunk_done(a, b)]
        bar = tqdm(total=self.n_views, unit="view", desc="counterfactuals", disable=not progress)
        bar.update(self.n_views - sum(self.offsets[b] - self.offsets[a] for a, b in todo))
        try:
            with worker_pool(workers) if workers > 0 else contextlib.nullcontext() as pool:
                for a, b in todo:
                    jobs = [
                        (root, image_id, removals, self.size) for image_id, removals in self.requests[a:b]
                    ]
                    views = list(pool.imap(render_job, jobs) if pool is not None else map(render_job, jobs))
                    array.write(self.offsets[a], self.offsets[b], np.concatenate(views), self._tag(a, b))
                    bar.update(self.offsets[b] - self.offsets[a])
        finally:
            bar.close()
        array.finish({"key": self.key})
        log.info("counterfactual cache complete: %s (%d views)", self.dir, self.n_views)

    def _tag(self, a: int, b: int) -> str:
        """What chunk [a, b) of images was rendered from (a resumed build reuses it only if equal)."""
        return requests_digest(self.requests[a:b])

    def _chunk_done(self, a: int, b: int) -> bool:
        """Whether chunk [a, b) holds no view or an earlier build wrote it from the same requests."""
        start, stop = int(self.offsets[a]), int(self.offsets[b])
        return start == stop or self.array.is_done(start, stop, self._tag(a, b))

    def open(self) -> np.ndarray:
        """The views (M, S, S, 3), memory-mapped read-only; refuses an incomplete cache or one whose
        complete.json names another dataset or key (e.g. a cache folder copied from elsewhere)."""
        if not self.is_complete():
            raise RuntimeError(
                f"counterfactual cache {self.dir} is incomplete (interrupted build?); build() it"
            )
        recorded = (read_json(self.array.complete_path) or {}).get("key")
        if recorded != self.key:
            recorded = recorded or {}
            if recorded.get("dataset") != self.key["dataset"]:
                what = f"dataset fingerprint {recorded.get('dataset')!r}, this data's {self.key['dataset']!r}"
            else:
                what = f"key {recorded!r}, requested {self.key!r}"
            raise ValueError(
                f"{self.array.complete_path}: {what}: a cache of other data; delete its folder to rebuild it"
            )
        return self.array.open()

    def views(self) -> Iterator[tuple[str, tuple[Removal, ...], np.ndarray]]:
        """(image id, removal sets, their (K, S, S, 3) views) per request, in request order."""
        array = self.open()
        for k, (image_id, removals) in enumerate(self.requests):
            yield image_id, removals, np.array(array[self.offsets[k] : self.offsets[k + 1]])
