"""The mask store: every test image's Grad-CAM of one run, with what it was computed from.

A store is a directory (`<run dir>/masks/`) holding the low-resolution normalised maps (float32, so the
full-resolution mask is reproduced exactly by `upsample_masks` on read: 30,000 images of a 7x7 map
take 6 MB), the predicted probabilities, the true cities, the image ids in split order and the
provenance. It is written under a temporary name and renamed, so a store that exists is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from citylens.explain.cam import upsample_masks

FORMAT_VERSION = 1
STORE_DIR = "masks"


class StoreError(RuntimeError):
    """A mask store is missing, incomplete, from another format version, or does not match another."""


def write_store(
    path: Path | str,
    low_res: np.ndarray,
    probs: np.ndarray,
    targets: np.ndarray,
    image_ids: Sequence[str],
    cities: Sequence[str],
    provenance: dict[str, Any],
) -> Path:
    """Write a store atomically: arrays and meta.json into a temporary sibling, then rename."""
    path = Path(path)
    n = len(image_ids)
    if not (len(low_res) == len(probs) == len(targets) == n):
        raise ValueError(
            f"store arrays disagree in length: {len(low_res)}, {len(probs)}, {len(targets)}, {n}"
        )
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "low_res.npy", np.ascontiguousarray(low_res, dtype=np.float32))
    np.save(tmp / "probs.npy", np.ascontiguousarray(probs, dtype=np.float32))
    np.save(tmp / "targets.npy", np.asarray(targets, dtype=np.int64))
    meta = {
        "format_version": FORMAT_VERSION,
        "image_ids": list(image_ids),
        "cities": list(cities),
        **provenance,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


@dataclass
class MaskStore:
    """Read access to a store: metadata, predictions, and full-resolution masks by chunk (memory-mapped)."""

    path: Path
    meta: dict[str, Any]
    low_res: np.ndarray
    probs: np.ndarray
    targets: np.ndarray

    @property
    def image_ids(self) -> list[str]:
        return self.meta["image_ids"]

    @property
    def cities(self) -> list[str]:
        return self.meta["cities"]

    @property
    def size(self) -> int:
        """Side of the full-resolution masks (the analysis view)."""
        return int(self.meta["input_size"])

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    def __len__(self) -> int:
        return len(self.image_ids)

    def masks(self, start: int = 0, stop: int | None = None, size: int | None = None) -> torch.Tensor:
        """Full-resolution (n, S, S) float32 masks of images start:stop, exactly as Grad-CAM returned them."""
        return upsample_masks(torch.from_numpy(np.array(self.low_res[start:stop])), size or self.size)

    def chunks(self, chunk: int = 256, size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, masks) over the store in order, `chunk` images at a time."""
        for start in range(0, len(self), chunk):
            yield start, self.masks(start, start + chunk, size)

    def identity(self) -> str:
        """A short name for messages: arch-s<seed> (run dir)."""
        return f"{self.meta.get('arch')}-s{self.meta.get('seed')} ({self.path.parent})"


def open_store(run_dir: Path | str) -> MaskStore:
    """Open the store of a run dir (or a store dir itself); fail clearly if missing, partial or foreign."""
    path = Path(run_dir)
    if (path / STORE_DIR).is_dir():
        path = path / STORE_DIR
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise StoreError(f"{path}: no mask store here (missing meta.json); run the analysis first")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: mask store format {meta.get('format_version')} is not this citylens's format "
            f"{FORMAT_VERSION}; re-run `citylens-analyze` on the run to rebuild it"
        )
    try:
        arrays = [np.load(path / f"{name}.npy", mmap_mode="r") for name in ("low_res", "probs", "targets")]
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: mask store is incomplete or damaged ({err})") from err
    n = len(meta["image_ids"])
    if any(len(a) != n for a in arrays):
        raise StoreError(f"{path}: mask store is incomplete ({[len(a) for a in arrays]} rows for {n} ids)")
    return MaskStore(path, meta, *arrays)


def check_same_images(stores: Sequence[MaskStore]) -> None:
    """Refuse stores that do not cover the same image ids, in the same order and analysis view."""
    first = stores[0]
    for other in stores[1:]:
        if other.size != first.size:
            raise StoreError(
                f"{first.identity()} and {other.identity()} use different analysis views "
                f"({first.size} vs {other.size} px)"
            )
        if other.image_ids != first.image_ids:
            a, b = first.image_ids, other.image_ids
            i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
            what = f"image {i}: {a[i] if i < len(a) else '<end>'} vs {b[i] if i < len(b) else '<end>'}"
            raise StoreError(
                f"{first.identity()} and {other.identity()} cover different test images; first "
                f"difference at {what}"
            )
