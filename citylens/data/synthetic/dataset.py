"""Synthetic datasets on disk: per-city class probabilities, generation, the manifest and a settings cache."""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from citylens.core.faults import kill_point
from citylens.core.io import atomic_path, atomic_write_text, file_lock, short_hash
from citylens.core.workers import worker_pool
from citylens.data.synthetic.config import (
    BASE_RATES,
    DEFAULT_CITIES,
    GENERATOR_VERSION,
    JPEG_QUALITY,
    OPTIONAL,
    check_rate,
    check_size,
    normalize_cities,
)
from citylens.data.synthetic.scene import render_scene, render_variants


def city_probabilities(
    cities: Mapping[str, Mapping[str, float]], other_city_rate: float = 0.1
) -> dict[str, dict[str, float]]:
    """Per city, the probability of every optional class.

    A class planted in any city leaves the shared grammar: it appears with the planted probability where it
    is planted and with `other_city_rate` elsewhere; every other class keeps its base rate in all cities.
    """
    check_rate("other_city_rate", other_city_rate)
    planted_anywhere = {name for planted in cities.values() for name in planted}
    return {
        city: {
            name: planted.get(name, other_city_rate) if name in planted_anywhere else BASE_RATES[name]
            for name in OPTIONAL
        }
        for city, planted in cities.items()
    }


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to render and write one image."""

    root: str
    city: str
    city_index: int
    index: int
    digits: int
    size: int
    seed: int
    probabilities: tuple[float, ...]
    night_rate: float


def image_seed(seed: int, city_index: int, index: int) -> np.random.SeedSequence:
    """The seed of one image: independent of the order and the process that renders it.

    Its own stream samples the image's contents (`image_rng`); the scene's backdrop and each object draw from
    streams spawned from it by key (`scene.stream`).
    """
    return np.random.SeedSequence([seed, city_index, index])


def image_rng(seed: int, city_index: int, index: int) -> np.random.Generator:
    """The stream that samples one image's contents: which optional classes, and day or night."""
    return np.random.default_rng(image_seed(seed, city_index, index))


def sample_contents(
    seed: int, city_index: int, index: int, probabilities: Sequence[float], night_rate: float
) -> tuple[list[str], bool]:
    """The optional classes present in one image (one probability each, OPTIONAL order) and whether it is
    a night scene."""
    rng = image_rng(seed, city_index, index)
    objects = [name for name, p in zip(OPTIONAL, probabilities) if rng.random() < p]
    return objects, bool(rng.random() < night_rate)


def _render_job(job: _Job) -> dict[str, Any]:
    """Sample an image's contents, render it, write the JPEG and the PNG label map; return its record.

    Both files are written atomically, so when both exist (a resumed generation) the image is whole and only
    its record is recomputed (the contents are drawn before rendering, from the image's own random streams).
    """
    objects, night = sample_contents(job.seed, job.city_index, job.index, job.probabilities, job.night_rate)
    stem = f"{job.city}_{job.index:0{job.digits}d}"
    folder = Path(job.root, job.city)
    jpg, png = folder / f"{stem}.jpg", folder / f"{stem}.labels.png"
    if not (jpg.is_file() and png.is_file()):
        image, label = render_scene(image_seed(job.seed, job.city_index, job.index), job.size, objects, night)
        with atomic_path(jpg) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=JPEG_QUALITY)
        with atomic_path(png) as tmp:
            Image.fromarray(label).save(tmp, format="PNG", compress_level=1)
    return {
        "image": f"{job.city}/{stem}.jpg",
        "labels": f"{job.city}/{stem}.labels.png",
        "night": night,
        "objects": objects,
    }


def generation_settings(
    cities: Mapping[str, Any] = DEFAULT_CITIES,
    images_per_city: int = 100,
    size: int = 224,
    seed: int = 0,
    other_city_rate: float = 0.1,
    night_rate: float = 0.3,
) -> dict[str, Any]:
    """The validated settings that determine the generated files (workers and progress do not); the keywords
    `generate` and `ensure_synthetic` take.

    The city order is part of them: a city's index seeds its images.
    """
    cities = normalize_cities(cities)
    check_rate("other_city_rate", other_city_rate)
    check_rate("night_rate", night_rate)
    if images_per_city < 1:
        raise ValueError(f"images_per_city: must be at least 1, got {images_per_city}")
    check_size(size)
    return {
        "generator_version": GENERATOR_VERSION,
        "cities": cities,
        "city_order": list(cities),
        "images_per_city": int(images_per_city),
        "size": int(size),
        "seed": int(seed),
        "other_city_rate": float(other_city_rate),
        "night_rate": float(night_rate),
        "jpeg_quality": JPEG_QUALITY,
    }


def generate(root: Path, workers: int = 1, progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Write a synthetic dataset: root/<city>/<city>_<NNNNN>.jpg, a .labels.png beside each, manifest.json.

    `settings` are generation_settings' keywords; the files depend only on them (not on `workers`). Images
    already in `root` (of an interrupted generation with the same settings) are kept, so generation resumes
    file by file; the temporaries a kill left are removed first. Returns the manifest.
    """
    settings = generation_settings(**settings)
    images_per_city, size, seed = settings["images_per_city"], settings["size"], settings["seed"]
    probabilities = city_probabilities(settings["cities"], settings["other_city_rate"])
    root = Path(root)
    for stale in root.glob("*/.*.tmp*"):
        stale.unlink()
    digits = max(5, len(str(images_per_city - 1)))
    jobs = []
    for ci, city in enumerate(settings["cities"]):
        (root / city).mkdir(parents=True, exist_ok=True)
        probs = tuple(probabilities[city][name] for name in OPTIONAL)
        jobs += [
            _Job(str(root), city, ci, i, digits, size, seed, probs, settings["night_rate"])
            for i in range(images_per_city)
        ]
    records = _run_jobs(jobs, workers, progress)
    manifest = {
        **settings,
        "planted": settings["cities"],
        "probabilities": probabilities,
        "images": {city: [r for r, j in zip(records, jobs) if j.city == city] for city in settings["cities"]},
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _run_jobs(jobs: list[_Job], workers: int, progress: bool) -> list[dict[str, Any]]:
    """Render all jobs, in order, in this process or a pool of `workers` processes (core.workers.worker_pool),
    with a progress bar."""
    bar = functools.partial(tqdm, total=len(jobs), desc="synthetic cities", unit="img", disable=not progress)
    if workers <= 1:
        return list(_passing(bar(map(_render_job, jobs))))
    with worker_pool(workers) as pool:
        chunksize = max(1, min(64, len(jobs) // (8 * workers)))
        return list(_passing(bar(pool.imap(_render_job, jobs, chunksize=chunksize))))


def _passing(records: Any) -> Any:
    """The records as they come, through the fault suite's `generation` kill point."""
    for record in records:
        kill_point("generation")
        yield record


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the generation settings (names the cache directory)."""
    return short_hash(settings)


def _complete(path: Path, settings: Mapping[str, Any]) -> bool:
    """Whether `path` holds a finished generation with exactly these settings."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in settings.items())


def ensure_synthetic(cache_dir: Path, workers: int = 1, progress: bool = True, **given: Any) -> Path:
    """Return cache_dir/synthetic-<hash of the settings>, generating it on first use.

    Generation goes to cache_dir/.synthetic-<hash>.partial, renamed into place only when complete, so an
    interrupted run never leaves a directory that looks finished; the next run resumes that folder file by
    file (and removes the randomly named partial folders older versions left). Processes generating the same
    settings take turns on a lock (cache_dir/.locks/), so the second finds the first's result; on a file
    system without working locks the loser of the rename uses the winner's folder. `given`: as generate's.
    """
    settings = generation_settings(**given)
    cache_dir = Path(cache_dir)
    final = cache_dir / f"synthetic-{settings_hash(settings)}"
    if _complete(final, settings):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / ".locks" / f"{final.name}.lock"):
        if _complete(final, settings):
            return final
        if final.exists():
            raise RuntimeError(
                f"{final} exists but is not a complete generation with these settings; delete it"
            )
        for stale in cache_dir.glob(f".{final.name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = cache_dir / f".{final.name}.partial"
        generate(partial, workers, progress, **given)
        try:
            os.rename(partial, final)
        except OSError:
            if not _complete(final, settings):
                raise
            shutil.rmtree(partial, ignore_errors=True)
    return final


class SyntheticCities:
    """A generated dataset as a renderer: any of its images again, optionally with object classes removed.

    Reads `root/manifest.json` (as data) and refuses a dataset written by another generator version, whose
    images this code would not reproduce. `render(image_id)` returns the generated image's pixels before JPEG
    encoding (the PNG label map is lossless, so `labels` equals it byte for byte).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        path = self.root / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable synthetic-cities manifest ({error})") from error
        version = manifest.get("generator_version")
        if version != GENERATOR_VERSION:
            raise ValueError(
                f"{path}: generator_version {version!r}, this code renders version {GENERATOR_VERSION}; "
                "regenerate the dataset (delete it from the cache)"
            )
        self.size, self.seed = int(manifest["size"]), int(manifest["seed"])
        self.night_rate = float(manifest["night_rate"])
        self.cities: list[str] = list(manifest["city_order"])
        self.probabilities = {
            city: tuple(float(manifest["probabilities"][city][name]) for name in OPTIONAL)
            for city in self.cities
        }
        self.index: dict[str, tuple[str, int]] = {
            record["image"]: (city, i)
            for city, records in manifest["images"].items()
            for i, record in enumerate(records)
        }

    def contents(self, image_id: str) -> tuple[list[str], bool]:
        """The optional classes present in an image and whether it is a night scene."""
        city, index = self.locate(image_id)
        ci = self.cities.index(city)
        return sample_contents(self.seed, ci, index, self.probabilities[city], self.night_rate)

    def locate(self, image_id: str) -> tuple[str, int]:
        """(city, index) of an image id such as `tokyo/tokyo_00003.jpg`."""
        if image_id not in self.index:
            raise KeyError(f"{self.root}: image {image_id!r} is not in this dataset's manifest")
        return self.index[image_id]

    def render(self, image_id: str, remove: Iterable[str] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
        """The image (size, size, 3) uint8 RGB and its (size, size) uint8 label map, without `remove`."""
        images, labels = self.render_variants(image_id, [remove])
        return images[0], labels[0]

    def render_variants(
        self, image_id: str, removes: Sequence[Iterable[str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """`render` once per entry of `removes`, in one pass: (K, S, S, 3) images, (K, S, S) labels."""
        city, index = self.locate(image_id)
        objects, night = self.contents(image_id)
        seed = image_seed(self.seed, self.cities.index(city), index)
        return render_variants(seed, self.size, objects, night, removes)
