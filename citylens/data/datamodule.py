"""CityDataModule: records -> preprocessing cache -> balanced, place-aware split -> loaders.

Subclasses only say where the records come from (`find_records`); everything else (the view cache,
skipping unreadable files, the split that depends on the data config alone, the analysis view) is
shared, so real and synthetic datasets go through the same code path.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from citylens.core.errors import ConfigError
from citylens.core.io import atomic_path
from citylens.core.records import ImageRecord
from citylens.data.cache import ViewCache
from citylens.data.folder import scan_folder
from citylens.data.split import SPLITS, balance, min_per_city, split_records, subsample

log = logging.getLogger("citylens.data")


class ViewDataset(Dataset):
    """Items of a split: ((3,S,S) uint8 view, city index); optional horizontal flips.

    The views stay uint8 until the network's device (CityClassifier.forward normalises them): a quarter of
    the bytes of float32 to collate, pin and copy to a GPU. `citylens.core.view.to_input` normalises them
    for any other network."""

    def __init__(self, views: np.ndarray, rows: np.ndarray, targets: np.ndarray, hflip: bool) -> None:
        self.views, self.rows, self.targets, self.hflip = views, rows, targets, hflip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.views[self.rows[i]])).permute(2, 0, 1)
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, int(self.targets[i])


@dataclass(frozen=True)
class SplitView:
    """One split of a set-up data module as the after-fit analysis reads it (the SplitData protocol of
    citylens.pipeline.context): records in split order, class indices, uint8 analysis views by index,
    batches of views, and the facts recorded with every artefact."""

    name: str
    records: Sequence[ImageRecord]
    cities: list[str]
    input_size: int
    fingerprint: str
    split_seed: int
    settings: dict[str, Any]
    facts: dict[str, Any]
    images: Any
    rows: np.ndarray

    @property
    def ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    @property
    def num_classes(self) -> int:
        return len(self.cities)

    def targets(self) -> np.ndarray:
        """Class index of each image, in split order."""
        return np.array([self.cities.index(r.city) for r in self.records], dtype=np.int64)

    def views(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (n, S, S, 3) analysis views of the images at `indices` (split order)."""
        return np.stack([np.asarray(self.images[self.rows[i]]) for i in indices])

    def batches(
        self, batch_size: int = 64, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, torch.Tensor, list[ImageRecord]]]:
        """Yield (index of the first image, uint8 (n, 3, S, S) views, records) over images start:stop."""
        stop = len(self.records) if stop is None else stop
        for i in range(start, stop, batch_size):
            j = min(stop, i + batch_size)
            yield i, torch.from_numpy(self.views(range(i, j))).permute(0, 3, 1, 2), list(self.records[i:j])

    def describe(self) -> dict[str, Any]:
        return self.facts

    def split_settings(self) -> dict[str, Any]:
        return self.settings


class CityDataModule(pl.LightningDataModule):
    """Shared data logic; see the module docstring. Arguments are the `data.*` config keys."""

    def __init__(
        self,
        input_size: int = 224,
        split: Sequence[float] = (0.6, 0.2, 0.2),
        split_seed: int = 0,
        split_by: str = "place",
        balance: bool = False,
        balance_seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        hflip: bool = True,
        cache_dir: str = "data_cache",
    ) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"data.input_size: {input_size} is too small (need >= 16)")
        if batch_size < 1:
            raise ValueError(f"data.batch_size: must be >= 1, got {batch_size}")
        self.input_size, self.fractions, self.split_seed = input_size, tuple(split), split_seed
        self.split_by, self.balance, self.balance_seed = split_by, balance, balance_seed
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        self.cache_dir = Path(cache_dir).expanduser()
        self.splits: dict[str, list[ImageRecord]] = {}
        self._cache: ViewCache | None = None

    def find_records(self) -> list[ImageRecord]:
        """Every candidate image of the dataset, sorted by id (subclasses implement)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Dataset facts recorded with every artefact (kind; the synthetic data adds its planted objects)."""
        return {"kind": type(self).__name__}

    def split_settings(self) -> dict[str, Any]:
        """Settings besides the split seed that decide which images are test images (kept with the masks)."""
        return {
            "fractions": [float(f) for f in self.fractions],
            "by": self.split_by,
            "balance": bool(self.balance),
            "balance_seed": int(self.balance_seed),
        }

    @property
    def cache(self) -> ViewCache:
        if self._cache is None:
            self._cache = ViewCache(self.cache_dir, self.find_records(), self.input_size)
        return self._cache

    def prepare_data(self) -> None:
        self.cache.build(workers=max(1, self.num_workers))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        failures = self.cache.failures()
        if failures:
            log.warning("skipped %d unreadable image(s): %s", len(failures), ", ".join(sorted(failures)[:10]))
        self.row = {r.image_id: i for i, r in enumerate(self.cache.records)}
        readable = [r for r in self.cache.records if r.image_id not in failures]
        all_cities = sorted({r.city for r in self.cache.records})
        empty = [c for c in all_cities if not any(r.city == c for r in readable)]
        if empty:
            raise ConfigError(f"city {empty[0]!r} has no readable image (see skipped files above)")
        if self.balance:
            readable = balance(readable, self.balance_seed)
        self.cities = all_cities
        self.splits = split_records(readable, self.fractions, self.split_seed, self.split_by)
        self._check_splits(readable)
        self.failures = failures
        self.fingerprint = self.cache.key["fingerprint"]

    def _check_splits(self, readable: Sequence[ImageRecord]) -> None:
        """Refuse, before training, a split with no image of some city where data.split asks for one."""
        for name, fraction in zip(SPLITS, self.fractions):
            if fraction <= 0:
                continue
            for city in self.cities:
                if not any(r.city == city for r in self.splits[name]):
                    have = sum(r.city == city for r in readable)
                    raise ConfigError(
                        f"city {city!r}: {have} usable image(s) leave its {name} split empty under "
                        f"data.split={list(self.fractions)} (split_by={self.split_by}); every city needs at "
                        f"least {min_per_city(self.fractions)} images (or places), e.g. more images or "
                        "data.images_per_city"
                    )

    @property
    def num_classes(self) -> int:
        return len(self.cities)

    def _dataset(self, name: str, hflip: bool) -> ViewDataset:
        records = self.splits[name]
        rows = np.array([self.row[r.image_id] for r in records], dtype=np.int64)
        targets = np.array([self.cities.index(r.city) for r in records], dtype=np.int64)
        return ViewDataset(self.cache.images(), rows, targets, hflip)

    def _loader(self, name: str, train: bool = False) -> DataLoader:
        return DataLoader(
            self._dataset(name, hflip=train and self.hflip),
            batch_size=self.batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def split_view(self, split: str = "test") -> SplitView:
        """The analysis' view of one split (set up first)."""
        self.setup("test")
        records = self.splits[split]
        return SplitView(
            split,
            records,
            list(self.cities),
            self.input_size,
            self.fingerprint,
            self.split_seed,
            self.split_settings(),
            self.describe(),
            self.cache.images(),
            np.array([self.row[r.image_id] for r in records], dtype=np.int64),
        )

    def targets(self, split: str = "test") -> np.ndarray:
        """City indices of a split, in split order."""
        return self.split_view(split).targets()

    def write_split(self, run_dir: Path) -> None:
        """Write split.csv (image_id, city, split) and, if any, skipped_images.csv to the run dir."""
        with atomic_path(run_dir / "split.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "city", "split"])
            for name in SPLITS:
                writer.writerows([r.image_id, r.city, name] for r in self.splits[name])
        if self.failures:
            with atomic_path(run_dir / "skipped_images.csv") as tmp, open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["image_id", "reason"])
                writer.writerows(sorted(self.failures.items()))


class FolderCityData(CityDataModule):
    """Any folder of city photos: root/<city>/**/*.{jpg,jpeg,png} (labels as <stem>.labels.png beside)."""

    def __init__(self, root: str, images_per_city: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if images_per_city is not None and images_per_city < 5:
            raise ConfigError(f"data.images_per_city: need at least 5 to split 6:2:2, got {images_per_city}")
        self.root, self.images_per_city = Path(root).expanduser(), images_per_city

    def find_records(self) -> list[ImageRecord]:
        """Every image under the root, or a seeded sample of `images_per_city` per city."""
        return subsample(scan_folder(self.root, key="data.root"), self.images_per_city, self.balance_seed)


class SyntheticCityData(CityDataModule):
    """The built-in synthetic cities, generated on first use under cache_dir and reused (keyed by settings).

    `cities` maps city -> {"planted": {ADE20K class: probability an image contains it}}.
    """

    def __init__(
        self,
        cities: dict[str, dict[str, dict[str, float]]],
        images_per_city: int = 500,
        image_size: int = 224,
        seed: int = 0,
        other_city_rate: float = 0.1,
        night_rate: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for city, spec in cities.items():
            if set(spec) != {"planted"}:
                raise ConfigError(
                    f"data.cities.{city}: expected exactly the key 'planted', got {sorted(spec)}"
                )
        if images_per_city < 5:
            raise ConfigError(f"data.images_per_city: need at least 5 to split 6:2:2, got {images_per_city}")
        self.planted = {city: dict(spec["planted"]) for city, spec in cities.items()}
        self.images_per_city, self.image_size, self.seed = images_per_city, image_size, seed
        self.other_city_rate, self.night_rate = other_city_rate, night_rate
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            from citylens.data.synthetic import ensure_synthetic

            self._root = ensure_synthetic(
                self.cache_dir,
                max(1, self.num_workers),
                cities=self.planted,
                images_per_city=self.images_per_city,
                size=self.image_size,
                seed=self.seed,
                other_city_rate=self.other_city_rate,
                night_rate=self.night_rate,
            )
        return self._root

    def find_records(self) -> list[ImageRecord]:
        return scan_folder(self.root, key="data (synthetic root)")

    def describe(self) -> dict[str, Any]:
        planted = {c: sorted(p for p, q in spec.items() if q > 0) for c, spec in self.planted.items()}
        return {"kind": "synthetic", "root": str(self.root), "planted": planted}
