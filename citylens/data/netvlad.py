"""Readers for the paper's datasets as NetVLAD distributes them: Pittsburgh 250k and Tokyo 24/7.

Layouts and .mat field order follow docs/datasets.md. Image ids are the
paths relative to each dataset root, prefixed by the city so the two datasets never collide; the place
is the panorama id, so all views of one panorama land in the same split (they are near-duplicates).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from citylens.core.records import ImageRecord
from citylens.data.datamodule import CityDataModule
from citylens.data.split import subsample

log = logging.getLogger("citylens.data")

MatFiles = str | os.PathLike | Sequence[str | os.PathLike] | None


@dataclass(frozen=True)
class Layout:
    """A dataset's folder levels and file names; `file` has a `place` group (the panorama id)."""

    city: str
    key: str
    mat_key: str
    description: str
    folders: tuple[re.Pattern[str], ...]
    file: re.Pattern[str]
    suffixes: tuple[str, ...]

    def place(self, rel: str) -> str | None:
        """The panorama id of a root-relative posix path, or None if the path is not in this layout."""
        *folders, name = rel.split("/")
        if len(folders) != len(self.folders):
            return None
        if not all(p.fullmatch(f) for p, f in zip(self.folders, folders, strict=True)):
            return None
        match = self.file.fullmatch(name)
        return match["place"] if match else None


PITTSBURGH = Layout(
    city="pittsburgh",
    key="data.pittsburgh_root",
    mat_key="data.pittsburgh_mat",
    description="<root>/NNN/PPPPPP_pitch{1,2}_yaw{1..12}.jpg (Pittsburgh 250k database folders 000..010, "
    "PPPPPP = panorama id; queries_real/ is not read)",
    folders=(re.compile(r"\d{3}"),),
    file=re.compile(r"(?P<place>\d{6})_pitch[12]_yaw(?:[1-9]|1[0-2])\.jpg"),
    suffixes=(".jpg",),
)
# Google Street View panorama ids are 22 characters of URL-safe base64, so they may contain '_' and '-'.
TOKYO = Layout(
    city="tokyo",
    key="data.tokyo_root",
    mat_key="data.tokyo_mat",
    description="<root>/0NNNN/<easting>_<northing>/<22-char panorama id>_012_<yaw 000..330>.png "
    "(Tokyo 24/7 database, 12 views per panorama)",
    folders=(re.compile(r"\d{5}"), re.compile(r"\d+(?:\.\d+)?_\d+(?:\.\d+)?")),
    file=re.compile(r"(?P<place>[A-Za-z0-9_-]{22})_\d{3}_\d{3}\.(?:png|jpg)"),
    suffixes=(".png", ".jpg"),
)


@dataclass(frozen=True)
class DbStruct:
    """NetVLAD's dbStruct; the Tokyo Time Machine variant adds the two time stamp fields."""

    which_set: str
    db_image_fns: list[str]
    utm_db: np.ndarray
    q_image_fns: list[str]
    utm_q: np.ndarray
    num_images: int
    num_queries: int
    pos_dist_thr: float
    pos_dist_sq_thr: float
    non_triv_pos_dist_sq_thr: float
    db_time_stamp: np.ndarray | None = None
    q_time_stamp: np.ndarray | None = None


def _strings(value: Any) -> list[str]:
    """Flatten a loadmat cell array / char array (any nesting of object arrays) into strings."""
    if isinstance(value, bytes):
        return [value.decode().strip()]
    if isinstance(value, str):
        return [value.strip()]
    array = np.asarray(value)
    if array.size == 0:
        return []
    if array.dtype.kind in "USO":
        return [s for item in array.ravel() for s in _strings(item)]
    raise ValueError(f"expected strings, got an array of {array.dtype}")


def _scalar(value: Any) -> float:
    return float(np.asarray(value, dtype=float).ravel()[0])


def read_db_struct(path: Path | str, key: str = "dbStruct") -> DbStruct:
    """Read a NetVLAD dbStruct .mat (pitts250k_*, pitts30k_*, tokyo247, tokyoTM_*; MATLAB v5 format).

    Fields are taken by name, so the 10-field (Pittsburgh, Tokyo 24/7) and 12-field (Tokyo Time
    Machine: dbTimeStamp, qTimeStamp) structs both work; counts stored as doubles become ints.
    """
    path = Path(path)
    try:
        struct = scipy.io.loadmat(path)[key]
    except (MatReadError, NotImplementedError, ValueError, KeyError, OSError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise ValueError(f"{path}: not a MATLAB v5 .mat holding a NetVLAD {key} ({reason})") from err
    names = struct.dtype.names
    if not names or struct.size != 1:
        raise ValueError(
            f"{path}: {key} is not a MATLAB struct (got an array of {struct.dtype}, {struct.shape})"
        )
    fields = dict(zip(names, struct.item(), strict=True))
    required = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries")
    absent = [name for name in required if name not in fields]
    if absent:
        raise ValueError(f"{path}: {key} lacks field(s) {absent}; it has {list(names)}")

    def number(name: str) -> float:
        return _scalar(fields[name]) if name in fields else float("nan")

    def stamps(name: str) -> np.ndarray | None:
        return np.asarray(fields[name]).ravel() if name in fields else None

    return DbStruct(
        which_set=(_strings(fields["whichSet"]) or [""])[0],
        db_image_fns=_strings(fields["dbImageFns"]),
        utm_db=np.asarray(fields["utmDb"], dtype=float),
        q_image_fns=_strings(fields["qImageFns"]),
        utm_q=np.asarray(fields["utmQ"], dtype=float),
        num_images=int(number("numImages")),
        num_queries=int(number("numQueries")),
        pos_dist_thr=number("posDistThr"),
        pos_dist_sq_thr=number("posDistSqThr"),
        non_triv_pos_dist_sq_thr=number("nonTrivPosDistSqThr"),
        db_time_stamp=stamps("dbTimeStamp"),
        q_time_stamp=stamps("qTimeStamp"),
    )


def _record(layout: Layout, root: Path, rel: str, place: str) -> ImageRecord:
    return ImageRecord(f"{layout.city}/{rel}", root / rel, layout.city, place)


def _check_root(root: Path | str, layout: Layout) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{layout.key}: {root} is not a directory; expected {layout.description}")
    return root


def scan_layout(root: Path | str, layout: Layout) -> list[ImageRecord]:
    """Every image under root that follows the layout, sorted by id; other files and folders are ignored."""
    root = _check_root(root, layout)
    folders = [root]
    for pattern in layout.folders:
        folders = [
            entry
            for folder in folders
            for entry in sorted(folder.iterdir())
            if entry.is_dir() and pattern.fullmatch(entry.name)
        ]
    records, ignored = [], 0
    for folder in folders:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            match = layout.file.fullmatch(entry.name)
            if match and entry.is_file():
                rel = Path(entry.path).relative_to(root).as_posix()
                records.append(_record(layout, root, rel, match["place"]))
            elif not entry.name.startswith("."):
                ignored += 1
    if not records:
        found = ", ".join(sorted(p.name for p in root.iterdir())[:8]) or "nothing"
        raise ValueError(
            f"{layout.key}: no {layout.city} images found under {root} (it holds: {found}); "
            f"expected {layout.description}"
        )
    if ignored:
        log.warning("%s: ignored %d file(s) under %s not named as the layout says", layout.key, ignored, root)
    return sorted(records, key=lambda r: r.image_id)


def _as_list(mat: MatFiles) -> list[str | os.PathLike]:
    """One .mat path, several (a list, or Hydra's ListConfig), or none."""
    if mat is None:
        return []
    return [mat] if isinstance(mat, str | os.PathLike) else list(mat)


def _mat_paths(mat: MatFiles, root: Path, layout: Layout) -> list[Path]:
    """The .mat file(s) as given, or relative to the dataset root; a missing one is an error."""
    paths = []
    for item in _as_list(mat):
        path = Path(item).expanduser()
        if not path.is_file() and not path.is_absolute() and (root / path).is_file():
            path = root / path
        if not path.is_file():
            raise FileNotFoundError(
                f"{layout.mat_key}: {path} is not a file; expected a NetVLAD dbStruct .mat "
                f"(e.g. pitts250k_train.mat, tokyo247.mat) listing images of {layout.description}"
            )
        paths.append(path)
    return paths


def select_from_mat(root: Path | str, mat: Path | str, layout: Layout) -> list[ImageRecord]:
    """The database images a dbStruct .mat lists, found on disk (a listed .jpg may be stored as .png).

    Absent files are reported as `N of M images listed in X are missing` and skipped; if none is
    present it is an error. Names that do not follow the layout mean the wrong .mat: an error.
    """
    root = _check_root(root, layout)
    listed = read_db_struct(mat).db_image_fns
    records, missing, strays = [], [], []
    for name in listed:
        rel = name.replace("\\", "/").removeprefix("./")
        names = dict.fromkeys([rel] + [os.path.splitext(rel)[0] + s for s in layout.suffixes])
        candidates = [c for c in names if layout.place(c)]
        found = next((c for c in candidates if (root / c).is_file()), None)
        if not candidates:
            strays.append(name)
        elif found is None:
            missing.append(name)
        else:
            records.append(_record(layout, root, found, layout.place(found) or ""))
    if strays:
        raise ValueError(
            f"{layout.mat_key}: {len(strays)} of {len(listed)} names in {mat} do not follow the layout "
            f"(e.g. {strays[0]!r}); expected names relative to {layout.key}={root} as in {layout.description}"
        )
    if not records:
        raise FileNotFoundError(
            f"{layout.mat_key}: none of the {len(listed)} images listed in {mat} exist under "
            f"{layout.key}={root} (e.g. {missing[0] if missing else 'it lists no names'}); "
            f"expected {layout.description}"
        )
    if missing:
        log.warning(
            "%d of %d images listed in %s are missing (e.g. %s); using the %d present",
            len(missing),
            len(listed),
            mat,
            missing[0],
            len(records),
        )
    return sorted(records, key=lambda r: r.image_id)


def read_dataset(root: Path | str, layout: Layout, mat: MatFiles = None) -> list[ImageRecord]:
    """The dataset's database images: those listed in the .mat file(s) if given, else every one on disk."""
    root = _check_root(root, layout)
    mats = _mat_paths(mat, root, layout)
    if not mats:
        return scan_layout(root, layout)
    unique = {r.image_id: r for m in mats for r in select_from_mat(root, m, layout)}
    return [unique[i] for i in sorted(unique)]


def read_pittsburgh(root: Path | str, mat: MatFiles = None) -> list[ImageRecord]:
    """Pittsburgh 250k database images (queries excluded), optionally those of pitts250k/30k .mat files."""
    return read_dataset(root, PITTSBURGH, mat)


def read_tokyo(root: Path | str, mat: MatFiles = None) -> list[ImageRecord]:
    """Tokyo 24/7 database images, optionally those of tokyo247.mat / tokyoTM_*.mat (.jpg names -> .png)."""
    return read_dataset(root, TOKYO, mat)


class PittsTokyoData(CityDataModule):
    """The paper's two cities: Pittsburgh 250k and Tokyo 24/7 in their distributed layouts.

    images_per_city caps each city (the paper uses 76k of each). With balance=True the larger city is
    also subsampled to the smaller one's count before the view cache is built, so the cache decodes
    only images a run can use (76k of Pittsburgh's 254k); balancing after unreadable files are dropped
    still happens in CityDataModule.setup.
    """

    def __init__(
        self,
        pittsburgh_root: str,
        tokyo_root: str,
        pittsburgh_mat: MatFiles = None,
        tokyo_mat: MatFiles = None,
        images_per_city: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if images_per_city is not None and images_per_city < 5:
            raise ValueError(f"data.images_per_city: need at least 5 to split 6:2:2, got {images_per_city}")
        self.pittsburgh_root = Path(pittsburgh_root).expanduser()
        self.tokyo_root = Path(tokyo_root).expanduser()
        self.pittsburgh_mat, self.tokyo_mat = pittsburgh_mat, tokyo_mat
        self.images_per_city = images_per_city

    def find_records(self) -> list[ImageRecord]:
        pittsburgh = read_pittsburgh(self.pittsburgh_root, self.pittsburgh_mat)
        records = pittsburgh + read_tokyo(self.tokyo_root, self.tokyo_mat)
        limit = self.images_per_city
        if self.balance:
            smallest = min(sum(r.city == c for r in records) for c in (PITTSBURGH.city, TOKYO.city))
            limit = smallest if limit is None else min(limit, smallest)
        return subsample(records, limit, self.balance_seed)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "pitts_tokyo",
            "pittsburgh_root": str(self.pittsburgh_root),
            "tokyo_root": str(self.tokyo_root),
            "pittsburgh_mat": [str(m) for m in _as_list(self.pittsburgh_mat)],
            "tokyo_mat": [str(m) for m in _as_list(self.tokyo_mat)],
            "images_per_city": self.images_per_city,
        }
