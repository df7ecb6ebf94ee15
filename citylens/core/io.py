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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from citylens.faults import kill_point

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
    the new one, also after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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


class ResumableArray:
    """A (N, ...) array on disk filled chunk by chunk; finished chunks survive an interruption.

    Layout in `directory`: data.npy (a memory map), progress.json (finished chunk starts, rewritten
    atomically after each chunk) and complete.json (written last, with the caller's metadata).
    """

    def __init__(self, directory: Path | str, shape: tuple[int, ...], dtype: str, chunk: int) -> None:
        self.directory = Path(directory)
        self.shape, self.dtype, self.chunk = tuple(shape), np.dtype(dtype), chunk
        self.data_path = self.directory / "data.npy"
        self.progress_path = self.directory / "progress.json"
        self.complete_path = self.directory / "complete.json"

    def is_complete(self) -> bool:
        return self.complete_path.is_file()

    def _open_for_write(self) -> np.memmap:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.data_path.is_file() and self.progress_path.is_file():
            array = np.load(self.data_path, mmap_mode="r+")
            if array.shape == self.shape and array.dtype == self.dtype:
                return array
        self.progress_path.unlink(missing_ok=True)
        return np.lib.format.open_memmap(self.data_path, mode="w+", dtype=self.dtype, shape=self.shape)

    def pending(self) -> list[int]:
        """Starts of the chunks still to compute (all of them for a fresh array)."""
        done = set(json.loads(self.progress_path.read_text())) if self.progress_path.is_file() else set()
        if not (self.data_path.is_file() and done):
            done = set()
        return [s for s in range(0, self.shape[0], self.chunk) if s not in done]

    def fill(self, compute: Any, metadata: Any, progress: Any = None) -> None:
        """Fill every pending chunk with compute(start, stop) -> array, then mark the array complete.

        `metadata` (a dict, or a callable returning one once all chunks are done) goes to complete.json.
        """
        array = self._open_for_write()
        done = [s for s in range(0, self.shape[0], self.chunk) if s not in set(self.pending())]
        for start in self.pending():
            stop = min(start + self.chunk, self.shape[0])
            array[start:stop] = compute(start, stop)
            array.flush()
            done.append(start)
            atomic_write_json(self.progress_path, sorted(done))
            kill_point("cache_chunk")
            if progress is not None:
                progress.update(stop - start)
        del array
        atomic_write_json(self.complete_path, metadata() if callable(metadata) else metadata)

    def open(self) -> np.ndarray:
        """The finished array, memory-mapped read-only; refuses an incomplete one."""
        if not self.is_complete():
            raise RuntimeError(f"{self.directory} is incomplete (interrupted build?); rebuild it")
        return np.load(self.data_path, mmap_mode="r")

    def metadata(self) -> dict[str, Any]:
        return json.loads(self.complete_path.read_text())
