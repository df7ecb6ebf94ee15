"""The runs of a sweep as the comparisons see them: which finished, which not, their masks streamed together.

A run counts as finished when its completion record (complete.json, written last, atomically, by
citylens-train or citylens-analyze) and the mask store of the analysis variant compared (renamed into place
whole) both exist, so reading it while other jobs of the sweep still run is safe. Runs without one are
listed as failed (failed.json, with its error line) or unfinished. Runs are always compared within one variant
(`<run>/analysis/<variant>/`). Run folders are data: symlinks leaving the sweep are refused, nothing runs.
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
from tqdm.auto import tqdm

from citylens.analysis.residuals import PairwiseResiduals
from citylens.core.io import read_json
from citylens.core.run_folder import COMPLETE, FAILED, RunStatus, run_status
from citylens.explain.store import MaskStore, StoreError, check_same_images, data_key, open_store
from citylens.pipeline.variant import ANALYSIS_DIR, Variant, list_variants

REPORT_DIR = "report"


@dataclass(eq=False)
class Run:
    """One finished run of a sweep: its directory, metrics, mask store and a short label for figures."""

    path: Path
    metrics: dict[str, Any]
    store: MaskStore
    variant: str
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

    @property
    def dir(self) -> Path:
        """The folder of the compared variant's artefacts: `<run>/analysis/<variant>/`."""
        return self.path / ANALYSIS_DIR / self.variant

    @property
    def settings(self) -> Variant:
        """The variant's settings as its mask store records them."""
        return Variant.from_dict(self.store.meta)

    def table(self, filename: str) -> pd.DataFrame | None:
        """A CSV artefact of the variant (object_ratios.csv, tsne.csv, recovery.csv) or, failing that, of the
        run itself (causal.csv); None when missing."""
        if filename not in self._tables:
            path = next((p for p in (self.dir / filename, self.path / filename) if p.is_file()), None)
            self._tables[filename] = pd.read_csv(path) if path is not None else None
        return self._tables[filename]

    @property
    def threshold(self) -> float:
        """The variant's explanation threshold, as its mask store records it."""
        return self.settings.threshold


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
    """Subdirectories that look like runs (a Hydra job dir, a completion/failure record or analyses), in
    job order. Symlinks leading out of the sweep are left out (scan_sweep lists them as refused)."""
    dirs = [
        p
        for p in Path(sweep_dir).iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name != REPORT_DIR
        and not leaves(p, sweep_dir)
        and any((p / m).exists() for m in (".hydra", COMPLETE, FAILED, "metrics.json", ANALYSIS_DIR))
    ]
    return sorted(dirs, key=job_order)


def escaping_dirs(sweep_dir: Path) -> list[Path]:
    """Entries of the sweep that are symlinks to folders outside it."""
    return sorted(p for p in Path(sweep_dir).iterdir() if p.is_symlink() and leaves(p, sweep_dir))


def open_run(path: Path, variant: str) -> Run:
    """Open a finished run's variant; StoreError or FileNotFoundError says why it is not one (scan_sweep
    checks the run's status and the symlink first, to tell failed, unfinished and refused runs apart)."""
    status = run_status(path)
    if status.state != "finished":
        raise FileNotFoundError(str(status))
    folder = path / ANALYSIS_DIR / variant
    if not folder.is_dir():
        raise FileNotFoundError(f"no analysis variant {variant}")
    if leaves(folder, path):
        raise StoreError(f"refused: {ANALYSIS_DIR}/{variant} is a symlink leaving the run folder")
    metrics = read_json(path / "metrics.json")
    return Run(path, metrics if isinstance(metrics, dict) else {}, open_store(folder), variant)


def sweep_variants(sweep_dir: Path | str) -> list[str]:
    """The analysis variants present in a sweep, the primary one first: the variant the training runs wrote
    (metrics.json `variant`), else the one most runs hold; then the others by how many runs hold them."""
    counts: dict[str, int] = {}
    trained: dict[str, int] = {}
    for path in candidate_dirs(Path(sweep_dir)):
        for name in list_variants(path):
            counts[name] = counts.get(name, 0) + 1
        metrics = read_json(path / "metrics.json")
        written = metrics.get("variant") if isinstance(metrics, dict) else None
        if written:
            trained[written] = trained.get(written, 0) + 1
    return sorted(counts, key=lambda v: (-trained.get(v, 0), -counts[v], v))


def scan_sweep(
    sweep_dir: Path | str, variant: str | None = None, exclude: Sequence[Path] = ()
) -> tuple[list[Run], dict[str, RunStatus]]:
    """Finished runs of a sweep for one variant (default: the primary one) in job order, and the others as
    name -> their status (failed, unfinished, refused, ignored) with the reason."""
    if variant is None:
        variants = sweep_variants(sweep_dir)
        variant = variants[0] if variants else ""
    finished, unfinished = [], {}
    skip = {Path(p).resolve() for p in exclude}
    for path in escaping_dirs(Path(sweep_dir)):
        reason = f"refused: a symlink leaving the sweep (to {path.resolve()})"
        unfinished[path.name] = RunStatus("refused", reason)
    for path in candidate_dirs(Path(sweep_dir)):
        if path.resolve() in skip:
            continue
        status = run_status(path)
        folder = path / ANALYSIS_DIR / variant
        if status.state != "finished":
            unfinished[path.name] = status
        elif folder.is_dir() and leaves(folder, path):
            reason = f"refused: {ANALYSIS_DIR}/{variant} is a symlink leaving the run folder"
            unfinished[path.name] = RunStatus("refused", reason)
        else:
            try:
                finished.append(open_run(path, variant))
            except (FileNotFoundError, StoreError, json.JSONDecodeError) as err:
                unfinished[path.name] = RunStatus("ignored", str(err))
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


def data_groups(runs: Sequence[Run]) -> tuple[list[list[Run]], dict[str, str]]:
    """The runs split by the data their masks were computed from (`data_key`), groups in order of appearance.

    Runs are compared only within a group. A run whose data matches a group's but whose store still covers
    other images (which should not happen) is refused: name -> the refusal message.
    """
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(data_key(run.store), []).append(run)
    groups, refused = [], {}
    for members in by_key.values():
        kept = [members[0]]
        for run in members[1:]:
            try:
                check_same_images([members[0].store, run.store])
            except StoreError as err:
                refused[run.name] = str(err)
                continue
            kept.append(run)
        groups.append(kept)
    return groups, refused


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
