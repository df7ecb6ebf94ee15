"""The mask store: every test image's Grad-CAM of one run, with what it was computed from.

A store is a directory (`<run dir>/masks/`) holding the low-resolution normalised maps (float32, so the
full-resolution mask is reproduced exactly by `upsample_masks` on read: 30,000 images of a 7x7 map
take 6 MB), the predicted probabilities, the true cities, the image ids in split order, each image's place
(the unit the bootstrap intervals resample, docs/statistics.md) and the provenance. It is written under a
temporary name and renamed, so a store that exists is complete.

Two stores are comparable only when they were computed from the same data: `DATA_FIELDS` (dataset
fingerprint, split seed, split settings, analysis view size) and then the image ids in order.
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

from citylens.core.run_folder import ANALYSIS_DIR, STORE_DIR, variant_dirs
from citylens.explain.cam import upsample_masks

FORMAT_VERSION = 2
# What makes two runs' test images the same pictures, in the order they are checked (docs/statistics.md).
DATA_FIELDS = ("dataset_fingerprint", "split_seed", "split_settings", "input_size")


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
    places: Sequence[str] | None = None,
) -> Path:
    """Write a store atomically: arrays and meta.json into a temporary sibling, then rename.

    `places`: each image's place (records' `place`); None makes every image its own place.
    """
    path = Path(path)
    n = len(image_ids)
    places = list(image_ids) if places is None else [str(p) for p in places]
    if not (len(low_res) == len(probs) == len(targets) == len(places) == n):
        raise ValueError(
            f"store arrays disagree in length: {len(low_res)}, {len(probs)}, {len(targets)}, "
            f"{len(places)} places, {n} ids"
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
        "places": places,
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
    def places(self) -> list[str]:
        """Each image's place (panorama, folder rule or the image itself): the bootstrap's resampling unit."""
        return self.meta["places"]

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

    def maps(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The stored maps of images start:stop as computed: a CAM's normalised low-resolution maps, or an
        attribution explainer's signed full-resolution maps (`masks`: their normalised positive part)."""
        return torch.from_numpy(np.array(self.low_res[start:stop]))

    def chunks(self, chunk: int = 256, size: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, masks) over the store in order, `chunk` images at a time."""
        for start in range(0, len(self), chunk):
            yield start, self.masks(start, start + chunk, size)

    def identity(self) -> str:
        """A short name for messages: arch-s<seed> (run dir)."""
        return f"{self.meta.get('arch')}-s{self.meta.get('seed')} ({self.path.parent})"


def open_store(path: Path | str, variant: str | None = None) -> MaskStore:
    """Open a mask store given its folder, a variant folder, or a run dir (with the `variant` name, or the
    run's only variant); fail clearly if missing, ambiguous, partial or foreign."""
    path = Path(path)
    if variant is not None:
        path = path / ANALYSIS_DIR / variant
    elif not (path / STORE_DIR).is_dir() and not (path / "meta.json").is_file():
        variants = variant_dirs(path)
        if len(variants) > 1:
            names = ", ".join(p.name for p in variants)
            raise StoreError(f"{path}: holds several analysis variants ({names}); name one")
        path = variants[0] if variants else path
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


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    """'image 3: x vs y' at the first index where two id lists differ ('<end>' past the shorter one)."""
    i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    return f"image {i}: {a[i] if i < len(a) else '<end>'} vs {b[i] if i < len(b) else '<end>'}"


def data_difference(a: MaskStore, b: MaskStore) -> str | None:
    """The first of DATA_FIELDS in which two stores differ, as 'field: value_a vs value_b'; None if none."""
    for name in DATA_FIELDS:
        va, vb = a.meta.get(name), b.meta.get(name)
        if va != vb:
            return f"{name}: {va!r} vs {vb!r}"
    return None


def data_key(store: MaskStore) -> str:
    """The store's DATA_FIELDS as one string: stores with equal keys hold masks of the same data."""
    return json.dumps([store.meta.get(name) for name in DATA_FIELDS], sort_keys=True, default=str)


def check_same_images(stores: Sequence[MaskStore]) -> None:
    """Refuse stores not computed from the same data (DATA_FIELDS) or not covering the same ids in order.

    The message names both runs, the field that differs and both values.
    """
    first = stores[0]
    for other in stores[1:]:
        if other.size != first.size:
            raise StoreError(
                f"{first.identity()} and {other.identity()} use different analysis views "
                f"(input_size: {first.size} vs {other.size} px)"
            )
        differs = data_difference(first, other)
        if differs is not None:
            raise StoreError(
                f"{first.identity()} and {other.identity()} were computed from different data; {differs}"
            )
        if other.image_ids != first.image_ids:
            raise StoreError(
                f"{first.identity()} and {other.identity()} cover different test images; first "
                f"difference at {_first_difference(first.image_ids, other.image_ids)}"
            )


def check_labels_match(store: MaskStore, label_ids: Sequence[str], dataset_fingerprint: str | None) -> None:
    """Refuse label maps that are not of the store's images, in the store's order, from the store's dataset.

    `label_ids`: the ids of the label maps in order (the label cache's manifest); the message names the first
    differing image, so `citylens-analyze RUN data.split_seed=1` cannot pair old masks with new labels.
    """
    recorded = store.meta.get("dataset_fingerprint")
    if dataset_fingerprint is not None and recorded is not None and recorded != dataset_fingerprint:
        raise StoreError(
            f"{store.identity()}: label maps are of another dataset; dataset_fingerprint: "
            f"{recorded!r} (store) vs {dataset_fingerprint!r} (labels)"
        )
    if list(label_ids) != store.image_ids:
        raise StoreError(
            f"{store.identity()}: label maps do not cover the store's test images in order (another split?); "
            f"first difference at {_first_difference(store.image_ids, list(label_ids))} (store vs labels); "
            "re-run the explain analysis with this data config"
        )
