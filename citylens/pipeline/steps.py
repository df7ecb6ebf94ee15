"""The after-fit analysis of a run as an ordered list of steps (docs/pipeline.md).

A step is its options: a frozen dataclass subclassing `StepOptions` that names the step, the artefacts it
reads (`needs`) and may write (`makes`), and whose `run(context)` calls the step's function. Hydra builds each
from `conf/analysis/steps/<name>.yaml` (`_target_` the dataclass), the one place its defaults are written:
the dataclass fields have none. `run_analysis` orders the steps by what they need, and skips a step whose
outputs are all there and whose inputs did not change since it ran: each finished step leaves a record
(`steps/<name>.json` in the variant's folder, or in the run folder for a step of the run) of its options, the
checkpoint, the variant and the sha256 of every file it read and wrote.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from citylens.core.io import atomic_write_json, read_json, sha256
from citylens.pipeline.context import Context, StepResult

log = logging.getLogger("citylens.analysis")

RECORDS_DIR = "steps"
VARIANT, RUN = "variant", "run"


@dataclass(frozen=True)
class StepOptions:
    """Base of every step's options.

    name: the step's name (its YAML file under conf/analysis/steps/). needs / makes: artefacts it reads /
    may write, as paths relative to the step's folder (the variant's folder, or the run folder for a `run`
    step); a path starting with `../../` reaches the run folder from a variant's. scope: `variant` (one per
    analysis variant) or `run` (one per run, shared by its variants). cached: False for a step whose inputs
    are not all files it names (the residuals read whichever runs of the sweep have finished).
    """

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    makes: ClassVar[tuple[str, ...]] = ()
    scope: ClassVar[str] = VARIANT
    cached: ClassVar[bool] = True

    def run(self, context: Context) -> StepResult:
        raise NotImplementedError

    def folder(self, context: Context) -> Path:
        """Where the step writes: the variant's folder, or the run folder for a `run` step."""
        return Path(context.run_dir) if self.scope == RUN else context.out


def ordered(steps: Sequence[StepOptions]) -> list[StepOptions]:
    """The steps in an order where each runs after every step that makes what it needs (else as given)."""
    pending, done = list(steps), []
    while pending:
        for step in pending:
            needs = {_from_run(step, p) for p in step.needs}
            made_by_others = {_from_run(o, p) for o in pending if o is not step for p in o.makes}
            if not needs & made_by_others:
                break
        else:
            raise ValueError(f"analysis.steps: circular needs among {[s.name for s in pending]}")
        pending.remove(step)
        done.append(step)
    return done


def _from_run(step: StepOptions, path: str) -> str:
    """An artefact path relative to the run folder, with `{variant}` for the variant's folder."""
    if step.scope == RUN:
        return path
    return path[len("../../") :] if path.startswith("../../") else f"analysis/{{variant}}/{path}"


def _hashes(folder: Path, paths: Sequence[str]) -> dict[str, str]:
    return {p: sha256(folder / p) for p in paths if (folder / p).is_file()}


def _record(step: StepOptions, context: Context, files: Sequence[Path]) -> dict[str, Any]:
    """What the step ran on and wrote, as stored in JSON (tuples become lists)."""
    folder, test = step.folder(context), context.test
    record = {
        "step": step.name,
        "options": asdict(step),
        "checkpoint_sha256": context.checkpoint_sha256,
        "variant": context.variant.to_dict() if step.scope == VARIANT else None,
        "data": {
            "fingerprint": test.fingerprint,
            "split_seed": test.split_seed,
            "split_settings": test.split_settings(),
            "input_size": test.input_size,
        },
        "segmenter": context.segmenter.identity() if context.segmenter is not None else None,
        "inputs": _hashes(folder, step.needs),
        "outputs": _hashes(folder, [str(Path(f).relative_to(folder)) for f in files]),
    }
    return json.loads(json.dumps(record, sort_keys=True, default=str))


CHECKED = ("options", "checkpoint_sha256", "variant", "data", "segmenter", "inputs")


def record_path(step: StepOptions, context: Context) -> Path:
    return step.folder(context) / RECORDS_DIR / f"{step.name}.json"


def is_current(step: StepOptions, context: Context) -> bool:
    """Did the step already run with these options, checkpoint, variant and inputs, its outputs untouched?"""
    if not step.cached or context.checkpoint_sha256 is None:
        return False
    recorded = read_json(record_path(step, context))
    if not recorded:
        return False
    folder = step.folder(context)
    now = _record(step, context, [])
    same = all(recorded.get(k) == now[k] for k in CHECKED)
    outputs = recorded.get("outputs") or {}
    return same and bool(outputs) and _hashes(folder, list(outputs)) == outputs


def run_analysis(
    context: Context,
    steps: Sequence[StepOptions],
    report: Callable[[StepOptions, StepResult], None] | None = None,
) -> dict[str, StepResult]:
    """Run `steps` on `context` in the order of their needs; skip the ones that are current (is_current).

    `report(step, result)` is called after each step that ran (the Lightning adapter logs its tables and
    figures). Returns the results of the steps that ran, by name.
    """
    results = {}
    for step in ordered(steps):
        if is_current(step, context):
            log.info("analysis step %s: already done with these inputs, kept", step.name)
            continue
        log.info("analysis step %s (%s)", step.name, context.variant.name if step.scope == VARIANT else "run")
        started = time.monotonic()
        result = step.run(context)
        atomic_write_json(record_path(step, context), _record(step, context, result.files))
        log.info("analysis step %s done in %.1f s", step.name, time.monotonic() - started)
        if report is not None:
            report(step, result)
        results[step.name] = result
    return results
