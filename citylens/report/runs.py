"""The runs of a sweep as the comparisons see them: which finished, which not, their masks streamed together.

A run counts as finished when its completion record (complete.json, written last, atomically, by
citylens-train or citylens-analyze) and its mask store (renamed into place whole) both exist, so reading it
while other jobs of the sweep still run is safe. Runs without one are listed as failed (failed.json, with its
error line) or unfinished. Run folders are data: symlinks leaving the sweep are refused, nothing there runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from citylens.analysis.residuals import PairwiseResiduals
from citylens.explain.store import STORE_DIR, MaskStore, StoreError, check_same_images, open_store
from citylens.io import read_json
from citylens.run_state import COMPLETE, FAILED, run_status

REPORT_DIR = "report"
DEFAULT_THRESHOLD = 0.5


@dataclass(eq=False)
class Run:
    """One finished run of a sweep: its directory, metrics, mask store and a short label for figures."""

    path: Path
    metrics: dict[str, Any]
    store: MaskStore
    label: str = ""
    _tables: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def arch(self) -> str:
        return str(self.store.meta.get("arch", self.metrics.get("arch")))

    @property
    def seed(self) -> Any:
        return self.store.meta.get("seed", self.metrics.get("seed"))

    @property
    def city_names(self) -> list[str]:
        return list(
            self.store.meta.get("city_names") or self.metrics.get("cities") or sorted(set(self.store.cities))
        )

    @property
    def planted(self) -> dict[str, list[str]]:
        return dict((self.store.meta.get("dataset") or {}).get("planted") or {})

    def table(self, filename: str) -> pd.DataFrame | None:
        """A CSV artefact of the run (object_ratios.csv, tsne.csv, recovery.csv), or None when missing."""
        if filename not in self._tables:
            path = self.path / filename
            self._tables[filename] = pd.read_csv(path) if path.is_file() else None
        return self._tables[filename]

    @property
    def threshold(self) -> float:
        """The run's main explanation threshold (analysis.threshold of its saved config)."""
        saved = self.path / ".hydra" / "config.yaml"
        if saved.is_file():
            value = OmegaConf.select(OmegaConf.load(saved), "analysis.threshold", default=None)
            if isinstance(value, int | float):
                return float(value)
        return DEFAULT_THRESHOLD


def job_order(path: Path) -> tuple[int, str]:
    """Sort key of run dirs: Hydra's job number prefix (`3_resnet18-s1`), then the name."""
    match = re.match(r"(\d+)_", path.name)
    return (int(match.group(1)) if match else 1 << 30, path.name)


def is_sweep_dir(path: Path) -> bool:
    """A Hydra multirun directory: it holds the multirun.yaml Hydra writes before the first job starts."""
    return (Path(path) / "multirun.yaml").is_file()


def leaves(path: Path, root: Path) -> bool:
    """Whether `path` (followed through symlinks) lies outside `root`."""
    return not Path(path).resolve().is_relative_to(Path(root).resolve())


def candidate_dirs(sweep_dir: Path) -> list[Path]:
    """Subdirectories that look like runs (a Hydra job dir, a completion/failure record or a mask store), in
    job order. Symlinks leading out of the sweep are left out (scan_sweep lists them as refused)."""
    dirs = [
        p
        for p in Path(sweep_dir).iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name != REPORT_DIR
        and not leaves(p, sweep_dir)
        and any((p / marker).exists() for marker in (".hydra", COMPLETE, FAILED, "metrics.json", STORE_DIR))
    ]
    return sorted(dirs, key=job_order)


def escaping_dirs(sweep_dir: Path) -> list[Path]:
    """Entries of the sweep that are symlinks to folders outside it."""
    return sorted(p for p in Path(sweep_dir).iterdir() if p.is_symlink() and leaves(p, sweep_dir))


def open_run(path: Path) -> Run:
    """Open a finished run; StoreError or FileNotFoundError says why it is not one ('failed: ...' etc.)."""
    status, why = run_status(path)
    if status != "finished":
        raise FileNotFoundError(f"{status}: {why}")
    if leaves(path / STORE_DIR, path):
        raise StoreError(f"refused: {STORE_DIR}/ is a symlink leaving the run folder")
    metrics = read_json(path / "metrics.json")
    return Run(path, metrics if isinstance(metrics, dict) else {}, open_store(path))


def scan_sweep(sweep_dir: Path | str, exclude: Sequence[Path] = ()) -> tuple[list[Run], dict[str, str]]:
    """Finished runs of a sweep in job order, and the others as name -> why (failed, unfinished, refused)."""
    finished, unfinished = [], {}
    skip = {Path(p).resolve() for p in exclude}
    for path in escaping_dirs(Path(sweep_dir)):
        unfinished[path.name] = f"refused: a symlink leaving the sweep (to {path.resolve()})"
    for path in candidate_dirs(Path(sweep_dir)):
        if path.resolve() in skip:
            continue
        try:
            finished.append(open_run(path))
        except (FileNotFoundError, StoreError, json.JSONDecodeError) as err:
            unfinished[path.name] = str(err)
    label_runs(finished)
    return finished, unfinished


def label_runs(runs: Sequence[Run]) -> None:
    """Label runs `arch-s<seed>`, falling back to the dir name where two runs would share a label."""
    labels = [f"{r.arch}-s{r.seed}" for r in runs]
    for run, label in zip(runs, labels):
        run.label = label if labels.count(label) == 1 else run.name


def order_by_arch(runs: Sequence[Run]) -> list[Run]:
    """Runs grouped by architecture (in order of first appearance), seeds ascending: seeds side by side."""
    first = {}
    for i, run in enumerate(runs):
        first.setdefault(run.arch, i)
    return sorted(runs, key=lambda r: (first[r.arch], str(r.seed).zfill(12), job_order(r.path)))


def comparable(runs: Sequence[Run]) -> tuple[list[Run], dict[str, str]]:
    """The largest set of runs whose stores cover the same images; the others as name -> refusal message."""
    groups: list[list[Run]] = []
    for run in runs:
        for group in groups:
            try:
                check_same_images([group[0].store, run.store])
            except StoreError:
                continue
            group.append(run)
            break
        else:
            groups.append([run])
    if not groups:
        return [], {}
    keep = max(groups, key=len)
    refused = {}
    for run in runs:
        if run not in keep:
            try:
                check_same_images([keep[0].store, run.store])
            except StoreError as err:
                refused[run.name] = str(err)
    return [r for r in runs if r in keep], refused


def stream_residuals(
    stores: Sequence[MaskStore], names: Sequence[str], chunk: int = 128
) -> PairwiseResiduals:
    """Per-image residuals of every pair of stores in one pass: each chunk of each store is read once.

    Stores that do not cover the same images in the same analysis view are refused (StoreError naming both).
    """
    check_same_images(stores)
    pairs = PairwiseResiduals(names)
    n = len(stores[0]) if stores else 0
    with tqdm(total=n, desc=f"residuals of {len(stores)} runs", unit="img", disable=n < 4 * chunk) as bar:
        for parts in zip(*(store.chunks(chunk) for store in stores)):
            pairs.update([masks for _, masks in parts])
            bar.update(len(parts[0][1]))
    return pairs


def pair_group(arch_a: str, arch_b: str) -> str:
    """'architecture' for runs of different architectures, 'seed' for one architecture retrained."""
    return "seed" if arch_a == arch_b else "architecture"


def planted_objects(runs: Sequence[Run]) -> dict[str, list[str]]:
    """The planted objects per city of synthetic data (empty for real data)."""
    return next((r.planted for r in runs if r.planted), {})


def city_index(run: Run, cities: Sequence[str]) -> np.ndarray:
    """City names -> indices into the run's city list."""
    index = {c: i for i, c in enumerate(run.city_names)}
    return np.array([index.get(c, -1) for c in cities], dtype=np.int64)
