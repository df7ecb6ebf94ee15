"""The names of a run folder's analysis layout: `<run>/analysis/<variant>/masks/` (docs/variants.md)."""

from __future__ import annotations

from pathlib import Path

ANALYSIS_DIR = "analysis"
STORE_DIR = "masks"


def variant_dirs(run_dir: Path | str) -> list[Path]:
    """The run's variant folders (under `<run>/analysis/`, holding a mask store's meta.json), sorted."""
    root = Path(run_dir) / ANALYSIS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / STORE_DIR / "meta.json").is_file())
