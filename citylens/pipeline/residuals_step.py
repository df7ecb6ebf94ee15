"""The residuals step of a run's analysis: the average residual AR of this run against every run of its sweep
that finished before it, for the same analysis variant (like with like).

Writes `<run>/analysis/<variant>/residuals.csv` (run_a = this run, run_b = an earlier one). A single run
(outputs/runs/...) has no siblings and gets a table with the header only. Siblings are read without a lock: a
run counts as finished once its metrics.json exists, and its mask store was renamed into place whole before
that, so what is read is complete; a job still running is simply not "already finished" and is compared when
the later job runs. Siblings of other data (another dataset fingerprint, split seed or settings, or view
size: a sweep over data settings) are another data group and never compared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from citylens.core.io import write_csv
from citylens.explain.store import STORE_DIR, StoreError, check_same_images, data_difference, open_store
from citylens.pipeline.context import Context, StepResult
from citylens.pipeline.runs import is_sweep_dir, scan_sweep, stream_residuals
from citylens.pipeline.steps import StepOptions
from citylens.pipeline.variant import Variant

log = logging.getLogger("citylens.analysis")

COLUMNS = ["run_a", "run_b", "arch_a", "arch_b", "seed_a", "seed_b", "ar", "n_images"]


def run_residuals(
    run_dir: Path | str, variant: Variant, sweep_dir: Path | str | None, chunk: int, strict: bool
) -> pd.DataFrame:
    """AR of the run in `run_dir` against every finished sibling run, one row per sibling (COLUMNS).

    `sweep_dir` defaults to the run's parent when that is a Hydra multirun directory. Siblings of other data
    are skipped (another data group); siblings of the same data whose stores cover other images raise
    StoreError (naming both runs) when `strict`, else are skipped with a warning.
    All pairs are streamed in one pass over the stores' chunks.
    """
    run_dir = Path(run_dir)
    store = open_store(variant.dir(run_dir))
    sweep = Path(sweep_dir) if sweep_dir is not None else run_dir.parent
    if sweep_dir is None and not is_sweep_dir(sweep):
        return pd.DataFrame(columns=COLUMNS)
    siblings, _ = scan_sweep(sweep, variant.name, exclude=[run_dir])
    usable = []
    for run in siblings:
        other_data = data_difference(store, run.store)
        if other_data is not None:
            log.info("residuals: %s is of other data (%s); not compared", run.name, other_data)
            continue
        try:
            check_same_images([store, run.store])
        except StoreError as err:
            if strict:
                raise
            log.warning("residuals: skipping %s: %s", run.name, err)
            continue
        usable.append(run)
    if not usable:
        return pd.DataFrame(columns=COLUMNS)
    names = [run_dir.name, *(r.name for r in usable)]
    pairs = stream_residuals([store, *(r.store for r in usable)], names, chunk)
    averages = pairs.average()
    rows = [
        {
            "run_a": run_dir.name,
            "run_b": r.name,
            "arch_a": store.meta.get("arch"),
            "arch_b": r.arch,
            "seed_a": store.meta.get("seed"),
            "seed_b": r.seed,
            "ar": averages[(run_dir.name, r.name)],
            "n_images": pairs.n_images,
        }
        for r in usable
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass(frozen=True)
class ResidualsOptions(StepOptions):
    """The residuals step (conf/analysis/steps/residuals.yaml says what each setting does). Never skipped as
    done: what it reads is whichever runs of the sweep have finished."""

    name: ClassVar[str] = "residuals"
    needs: ClassVar[tuple[str, ...]] = (f"{STORE_DIR}/meta.json",)
    makes: ClassVar[tuple[str, ...]] = ("residuals.csv",)
    cached: ClassVar[bool] = False

    chunk: int
    strict: bool

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"analysis.steps.residuals.chunk: must be >= 1, got {self.chunk}")

    def run(self, context: Context) -> StepResult:
        return write_residuals(context, self)


def write_residuals(context: Context, options: ResidualsOptions) -> StepResult:
    """Write `<run>/analysis/<variant>/residuals.csv` (run_residuals); nothing, with a warning, when the
    variant has no mask store (the explain step did not run)."""
    out = context.out
    if not (out / STORE_DIR / "meta.json").is_file():
        log.warning("residuals skipped: %s has no mask store (is analysis.steps.explain off?)", out)
        return StepResult()
    table = run_residuals(context.run_dir, context.variant, context.sweep_dir, options.chunk, options.strict)
    write_csv(table, out / "residuals.csv")
    if len(table):
        log.info("residuals: %s", ", ".join(f"{r.run_b} {r.ar:.4f}" for r in table.itertuples()))
    else:
        log.info("residuals: no earlier finished run in this sweep; wrote the header only")
    return StepResult([out / "residuals.csv"], {"residuals": table})
