"""Atomic writes, file locks and a resumable chunked array: the storage rules every artefact follows.

Everything is written under a temporary name and renamed, so an interrupted run never leaves a file
that looks complete (docs/variants.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from citylens.core.faults import kill_point

log = logging.getLogger("citylens")

# How often a process waiting on another's lock says so.
LOCK_REPORT_S = 30.0


def short_hash(obj: Any, length: int = 12) -> str:
    """A stable hex digest of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256(path: Path | str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write bytes to `path` through a temporary sibling, fsync and os.replace: readers see the old file or
    the new one, also after a crash. A write or rename that fails removes the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path | str) -> Any:
    """A JSON file's contents, or None when it is missing or not valid JSON (e.g. written by a killed run)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write text atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Write an object as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write to; it is renamed to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(table: Any, path: Path | str) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically; return the path."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def _lock_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a portable `filelock.FileLock`): parallel jobs wait their turn.

    The holder writes `pid <pid> on <host> since <time>` into `<path>.holder`; a waiting process logs whose
    lock it waits for, and again every LOCK_REPORT_S seconds with how long it has waited.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_name(path.name + ".holder")
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        start = time.monotonic()
        log.info("waiting for lock %s (held by %s)", path, _lock_holder(holder))
        while True:
            try:
                lock.acquire(timeout=LOCK_REPORT_S)
                break
            except Timeout:
                log.info(
                    "still waiting for lock %s (held by %s): %.0f s",
                    path,
                    _lock_holder(holder),
                    time.monotonic() - start,
                )
        log.info("got lock %s after %.1f s", path, time.monotonic() - start)
    try:
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def merge_ranges(ranges: Iterable[Sequence[int]]) -> list[list[int]]:
    """Sorted, merged [start, stop) ranges."""
    merged: list[list[int]] = []
    for start, stop in sorted((int(a), int(b)) for a, b in ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return merged


class ResumableArray:
    """A (N, ...) array on disk written range by range; finished ranges survive an interruption.

    Layout in `directory`: `name` (a .npy memory map), progress.json ({"shape", "chunks": [[start, stop,
    tag]]}, rewritten atomically after each range) and complete.json (written last, with the caller's
    metadata). A range's `tag` (e.g. a digest of the ids its rows were computed for) lets a resumed build
    skip a range only when it is the same work. Used by the view cache and the label-map cache.
    """

    def __init__(
        self, directory: Path | str, shape: tuple[int, ...], dtype: str | np.dtype, name: str = "data.npy"
    ) -> None:
        self.directory = Path(directory)
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.data_path = self.directory / name
        self.progress_path = self.directory / "progress.json"
        self.complete_path = self.directory / "complete.json"
        self._chunks: list[list[Any]] = []
        self._array: np.memmap | None = None

    def is_complete(self) -> bool:
        return self.complete_path.is_file()

    def recorded(self) -> list[list[Any]]:
        """The [start, stop, tag] ranges an earlier build of this shape finished (none without its data)."""
        if not (self.progress_path.is_file() and self.data_path.is_file()):
            return []
        state = json.loads(self.progress_path.read_text())
        if not isinstance(state, dict) or state.get("shape") != list(self.shape):
            return []
        return [[int(a), int(b), tag] for a, b, tag in state["chunks"]]

    def done_ranges(self) -> list[list[int]]:
        """The merged [start, stop) ranges already written."""
        return merge_ranges((a, b) for a, b, _ in self.recorded())

    def begin(self) -> None:
        """Open the array for writing: resume an earlier build of this shape and dtype, else start afresh."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._chunks = self.recorded()
        if self._chunks:
            array = np.load(self.data_path, mmap_mode="r+")
            if array.shape == self.shape and array.dtype == self.dtype:
                self._array = array
                return
            del array
            self._chunks = []
        self.progress_path.unlink(missing_ok=True)
        self._array = np.lib.format.open_memmap(self.data_path, mode="w+", dtype=self.dtype, shape=self.shape)

    def is_done(self, start: int, stop: int, tag: Any = None) -> bool:
        """Whether this build (after `begin`) already holds exactly this range with this tag."""
        return [int(start), int(stop), tag] in self._chunks

    def write(self, start: int, stop: int, values: Any, tag: Any = None) -> None:
        """Write rows [start, stop) and record the range (replacing any recorded range it overlaps)."""
        if self._array is None:
            raise RuntimeError(f"{self.directory}: begin() the build before writing")
        if start < 0 or stop > self.shape[0] or start >= stop:
            raise ValueError(f"range [{start}, {stop}) lies outside 0..{self.shape[0]}")
        self._array[start:stop] = values
        self._array.flush()
        kept = [c for c in self._chunks if c[1] <= start or c[0] >= stop]
        self._chunks = sorted([*kept, [int(start), int(stop), tag]], key=lambda c: (c[0], c[1]))
        atomic_write_json(self.progress_path, {"shape": list(self.shape), "chunks": self._chunks})
        kill_point("cache_chunk")

    def finish(self, metadata: dict[str, Any]) -> None:
        """Mark the array complete (complete.json = `metadata`); refuses while rows are missing (an array of
        no rows is complete as it is)."""
        self._array = None
        done = merge_ranges((a, b) for a, b, _ in self._chunks)
        if self.shape[0] and done != [[0, self.shape[0]]]:
            raise RuntimeError(
                f"{self.directory}: rows {done} of [0, {self.shape[0]}) written; the array stays incomplete"
            )
        atomic_write_json(self.complete_path, metadata)

    def fill(self, compute: Any, metadata: Any, chunk: int, progress: Any = None) -> None:
        """Fill every missing chunk of `chunk` rows with compute(start, stop) -> array, then finish.

        `metadata` (a dict, or a callable returning one once all chunks are done) goes to complete.json.
        """
        self.begin()
        for start in range(0, self.shape[0], chunk):
            stop = min(start + chunk, self.shape[0])
            if not self.is_done(start, stop):
                self.write(start, stop, compute(start, stop))
            if progress is not None:
                progress.update(stop - start)
        self.finish(metadata() if callable(metadata) else metadata)

    def open(self) -> np.ndarray:
        """The finished array, memory-mapped read-only; refuses an incomplete one."""
        if not self.is_complete():
            raise RuntimeError(f"{self.directory} is incomplete (interrupted build?); rebuild it")
        return np.load(self.data_path, mmap_mode="r")

    def metadata(self) -> dict[str, Any]:
        return json.loads(self.complete_path.read_text())
