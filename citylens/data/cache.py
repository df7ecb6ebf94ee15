"""The preprocessing cache: every image decoded once, brought to the analysis view, kept as uint8.

One cache per (dataset fingerprint, view size), shared by every run of a sweep and by the analysis.
All cities pass through the same decode and resize, so a file-format difference cannot become a cue.
Unreadable files (zero bytes, truncated, not an image) are skipped and reported, never fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from citylens.core.io import ResumableArray, atomic_write_json, file_lock, short_hash
from citylens.core.records import ImageRecord
from citylens.core.view import analysis_view

log = logging.getLogger("citylens.data")

CHUNK = 256


def fingerprint(records: Sequence[ImageRecord]) -> str:
    """Identify a dataset by its image ids, cities and file sizes (cheap: one stat per file)."""
    return short_hash([(r.image_id, r.city, r.path.stat().st_size) for r in records], 16)


def decode(path: Path, size: int) -> tuple[np.ndarray | None, str | None]:
    """Decode one file into the analysis view; return (array, None) or (None, reason) if unreadable."""
    try:
        if path.stat().st_size == 0:
            return None, "zero-byte file"
        with Image.open(path) as image:
            image.load()
            return analysis_view(image, size), None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, f"{type(err).__name__}: {err}"


def _decode_many(args: tuple[list[Path], int]) -> list[tuple[np.ndarray | None, str | None]]:
    paths, size = args
    return [decode(p, size) for p in paths]


class ViewCache:
    """uint8 (N, size, size, 3) analysis views of `records`, built once under cache_dir, resumable."""

    def __init__(self, cache_dir: Path | str, records: Sequence[ImageRecord], size: int) -> None:
        self.records, self.size = list(records), size
        self.key = {"fingerprint": fingerprint(self.records), "size": size, "n": len(self.records)}
        self.directory = Path(cache_dir) / f"views-{short_hash(self.key)}"
        self.array = ResumableArray(self.directory, (len(self.records), size, size, 3), "uint8")

    def build(self, workers: int = 1, progress: bool = True) -> None:
        """Decode every image not yet cached (in `workers` processes); other processes wait on a lock."""
        with file_lock(self.directory.with_suffix(".lock")):
            if self.array.is_complete():
                log.info("view cache hit: %s (%d images)", self.directory, len(self.records))
                return
            log.info("building view cache %s (%d images, %dpx)", self.directory, len(self.records), self.size)
            bar = tqdm(total=len(self.records), desc="decoding images", unit="img", disable=not progress)
            pool = ProcessPoolExecutor(workers) if workers > 1 else None
            try:
                self.array.fill(lambda a, b: self._chunk(a, b, pool, workers), self._metadata, CHUNK, bar)
            finally:
                bar.close()
                if pool is not None:
                    pool.shutdown()

    def _metadata(self) -> dict:
        failures = {}
        for part in sorted(self.directory.glob("failures-*.json")):
            failures.update(json.loads(part.read_text()))
        return {**self.key, "failures": failures}

    def _chunk(self, start: int, stop: int, pool: ProcessPoolExecutor | None, workers: int) -> np.ndarray:
        paths = [r.path for r in self.records[start:stop]]
        if pool is None:
            results = _decode_many((paths, self.size))
        else:
            parts = [paths[i::workers] for i in range(workers)]
            decoded = list(pool.map(_decode_many, [(p, self.size) for p in parts]))
            results = [decoded[i % workers][i // workers] for i in range(len(paths))]
        out = np.zeros((stop - start, self.size, self.size, 3), np.uint8)
        failures = {}
        for i, (array, reason) in enumerate(results):
            if array is None:
                failures[self.records[start + i].image_id] = reason
            else:
                out[i] = array
        atomic_write_json(self.directory / f"failures-{start:09d}.json", failures)
        return out

    def images(self) -> np.ndarray:
        """The cached views, memory-mapped read-only."""
        return self.array.open()

    def failures(self) -> dict[str, str]:
        """image_id -> why it could not be read."""
        return self.array.metadata()["failures"]
