"""A run folder: its layout and its state. The one home of the names of what a run folder holds: the
analysis variants under `<run>/analysis/<variant>/` with their mask store `masks/` (docs/variants.md), the
checkpoints, and the state: finished (complete.json), failed (failed.json) or unfinished.

`complete.json` is written last, atomically, by citylens-train and citylens-analyze; it lists every artefact
under the run folder (walked, so it follows wherever the analysis writes) with its size and SHA-256, so a
finished run can be told from one killed half-way and checked for damage. `failed.json` holds the error line
and traceback of a job that raised; a rerun clears it. Checkpoints are checked by loading them
(memory-mapped), so a truncated or zero-byte file is never taken for a good one. See docs/faults.md.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import citylens
from citylens.core.io import atomic_write_json, read_json, sha256

log = logging.getLogger("citylens")

ANALYSIS_DIR = "analysis"
STORE_DIR = "masks"


def variant_dirs(run_dir: Path | str) -> list[Path]:
    """The run's variant folders (under `<run>/analysis/`, holding a mask store's meta.json), sorted."""
    root = Path(run_dir) / ANALYSIS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / STORE_DIR / "meta.json").is_file())


COMPLETE = "complete.json"
FAILED = "failed.json"
CHECKPOINTS = "checkpoints"
# Temporaries of atomic writes: .<name>.tmp<pid>[...] (citylens.core.io, mask store, reports).
TEMP = re.compile(r"^\..+\.tmp\d+")


def is_temp(path: Path) -> bool:
    """Whether `path` is the temporary of an atomic write (left behind only by a killed process)."""
    return bool(TEMP.match(path.name))


def artefacts(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every regular file under the run folder (relative path -> size, sha256) but records, temps, logs."""
    out = {}
    for path in sorted(Path(run_dir).rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_symlink() or not path.is_file() or rel.as_posix() in (COMPLETE, FAILED):
            continue
        # Logs keep growing after the record (the job's own log lines), locks are not results.
        if path.suffix in (".lock", ".log", ".holder") or any(is_temp(Path(part)) for part in rel.parts):
            continue
        out[rel.as_posix()] = {"size": path.stat().st_size, "sha256": sha256(path)}
    return out


def write_complete(run_dir: Path | str, provenance: dict[str, Any]) -> dict[str, Any]:
    """Mark the run finished: complete.json with its artefacts and `provenance` (who wrote it, settings)."""
    run_dir = Path(run_dir)
    record = {
        "citylens_version": citylens.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance,
        "artefacts": artefacts(run_dir),
    }
    (run_dir / FAILED).unlink(missing_ok=True)
    atomic_write_json(run_dir / COMPLETE, record)
    return record


def read_complete(run_dir: Path | str) -> dict[str, Any] | None:
    """The completion record, or None when the run has none (or an unreadable one)."""
    record = read_json(Path(run_dir) / COMPLETE)
    return record if isinstance(record, dict) and isinstance(record.get("artefacts"), dict) else None


def check_complete(run_dir: Path | str, hashes: bool = False) -> list[str]:
    """What is wrong with a finished run's artefacts (missing, other size, other hash when `hashes`)."""
    run_dir = Path(run_dir)
    record = read_complete(run_dir)
    if record is None:
        return [f"{run_dir}: no {COMPLETE}"]
    problems = []
    for rel, info in record["artefacts"].items():
        path = run_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != info.get("size"):
            problems.append(f"{rel}: {path.stat().st_size} bytes, recorded {info.get('size')}")
        elif hashes and sha256(path) != info.get("sha256"):
            problems.append(f"{rel}: contents changed since the run finished")
    return problems


def error_line(err: BaseException) -> str:
    """One line saying what went wrong: the message of a ConfigError, else `Type: message`."""
    from citylens.core.errors import ConfigError

    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, ConfigError) else f"{type(err).__name__}: {text}".rstrip(": ")


def write_failed(run_dir: Path | str, err: BaseException) -> None:
    """Record a failed job: failed.json with the error line and the traceback."""
    atomic_write_json(
        Path(run_dir) / FAILED,
        {
            "error": error_line(err),
            "type": type(err).__name__,
            "traceback": "".join(traceback.format_exception(err)),
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands for the report: `state` finished, failed, unfinished, refused (its folder may not
    be read) or ignored (e.g. it lacks the variant); `reason` the line shown to people (empty if finished)."""

    state: str
    reason: str = ""

    def __str__(self) -> str:
        return self.reason or self.state


def run_status(run_dir: Path | str) -> RunStatus:
    """finished, failed (with the error line) or unfinished (with why) for a run folder."""
    run_dir = Path(run_dir)
    if read_complete(run_dir) is not None:
        return RunStatus("finished")
    failed = read_json(run_dir / FAILED)
    if isinstance(failed, dict):
        return RunStatus("failed", f"failed: {failed.get('error', 'failed')}")
    why = f"no {COMPLETE} (still running, or killed: rerun the same command to resume)"
    return RunStatus("unfinished", f"unfinished: {why}")


def clean_temps(run_dir: Path | str) -> list[Path]:
    """Remove the temporaries a killed process left under the run folder; return what was removed."""
    removed = []
    for path in sorted(Path(run_dir).rglob(".*")):
        if is_temp(path) and not path.is_symlink():
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.warning("removed %d temporary file(s) of an interrupted run: %s", len(removed), removed[0])
    return removed


def checkpoint_info(path: Path) -> dict[str, int] | None:
    """(epoch, global_step) of a loadable Lightning checkpoint, or None when it is missing or damaged."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return {"epoch": int(ckpt["epoch"]), "global_step": int(ckpt["global_step"])}
    except Exception:  # any failure to load means: not a usable checkpoint
        return None


def resume_checkpoint(run_dir: Path | str) -> Path | None:
    """The newest loadable checkpoint of an interrupted run (last.ckpt or best.ckpt), or None."""
    found = []
    for name in ("last.ckpt", "best.ckpt"):
        path = Path(run_dir) / CHECKPOINTS / name
        info = checkpoint_info(path)
        if info is not None:
            found.append(((info["global_step"], info["epoch"], name == "last.ckpt"), path))
        elif path.exists():
            log.warning("checkpoint %s is damaged (cannot be loaded); not resuming from it", path)
    return max(found)[1] if found else None


def best_checkpoint(run_dir: Path | str) -> Path:
    """A run's best checkpoint (checkpoints/best.ckpt); if damaged, last.ckpt with a warning."""
    from citylens.core.errors import ConfigError

    best, last = (Path(run_dir) / CHECKPOINTS / n for n in ("best.ckpt", "last.ckpt"))
    if checkpoint_info(best) is not None:
        return best
    if checkpoint_info(last) is not None:
        if best.exists():
            log.warning("%s is damaged (cannot be loaded); using %s instead", best, last)
        return last
    raise ConfigError(f"{Path(run_dir) / CHECKPOINTS}: no loadable best.ckpt or last.ckpt")
