"""The sweep report: every finished run of a sweep compared on one page -> <sweep>/report/.

`build_report(sweep_dir)` reads the finished runs (metrics.json + mask store; object_ratios.csv, tsne.csv and
recovery.csv where present), lists the unfinished ones, and writes Table 2 (AR per pair of runs with bootstrap
intervals, grouped as in the paper) with its heatmap, the permutation tests, Figures 3, 5 and 6 across runs,
the planted-object recovery and report.md with one line of reading per table and figure. The report is built
in a temporary folder and renamed into place, so a report that exists is whole.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from citylens.errors import ConfigError
from citylens.faults import kill_point
from citylens.io import atomic_write_text, file_lock
from citylens.report.runs import (
    REPORT_DIR,
    Run,
    comparable,
    is_sweep_dir,
    order_by_arch,
    scan_sweep,
    stream_residuals,
)
from citylens.report.sections import (
    Section,
    fig3_section,
    fig5_section,
    fig6_section,
    recovery_section,
    runs_section,
    stats_section,
    table2_sections,
)
from citylens.report.tables import comparison_tests, ratio_distances, recovery_table, table2

log = logging.getLogger("citylens.report")


@dataclass
class Options:
    """Report settings: bootstrap replicates, permutations, sample images per city, chunk size, seed."""

    n_boot: int = 1000
    n_perm: int = 10000
    examples_per_city: int = 2
    chunk: int = 128
    seed: int = 0


def _csv(table: pd.DataFrame, out: Path, name: str) -> None:
    table.to_csv(out / name, index=False)


def _sections(runs: list[Run], ignored: dict[str, str], options: Options, out: Path) -> list[Section]:
    sections = [runs_section(runs, ignored)]
    if not runs:
        return sections
    threshold = runs[0].threshold
    log.info("sweep report: residuals, Table 2 and statistics of %d runs...", len(runs))
    pairs = (
        stream_residuals([r.store for r in runs], [r.name for r in runs], options.chunk)
        if len(runs) > 1
        else None
    )
    per_pair, grouped = table2(runs, pairs, options.n_boot, options.seed)
    distances = ratio_distances(runs, threshold)
    tests = comparison_tests(per_pair, distances, options.n_perm)
    for table, name in (
        (per_pair, "table2.csv"),
        (grouped, "table2_grouped.csv"),
        (distances, "ratio_distances.csv"),
        (tests, "statistics.csv"),
    ):
        _csv(table, out, name)
    sections += table2_sections(runs, per_pair, grouped, tests, out)
    sections.append(stats_section(tests, len(runs)))
    log.info("sweep report: figures 3, 5, 6 across %d runs...", len(runs))
    sections.append(fig3_section(runs, out))
    sections.append(fig5_section(runs, threshold, out))
    sections.append(
        fig6_section(runs, pairs.matrix() if pairs else None, options.examples_per_city, options.seed, out)
    )
    recovery = recovery_table(runs, threshold)
    if len(recovery):
        _csv(recovery, out, "recovery.csv")
        sections.append(recovery_section(recovery))
    return sections


def status_of(reason: str) -> str:
    """A run's status in runs.csv from the reason it was left out: failed, unfinished, refused or ignored."""
    word = reason.split(":", 1)[0]
    return word if word in ("failed", "unfinished", "refused") else "ignored"


def build_report(sweep_dir: Path | str, options: Options | None = None) -> Path:
    """Write <sweep>/report/ (tables, figures, report.md) from the sweep's finished runs; return its path."""
    sweep_dir = Path(sweep_dir).resolve()
    if not is_sweep_dir(sweep_dir):
        raise ConfigError(f"{sweep_dir}: not a sweep folder (no multirun.yaml); give outputs/sweeps/<stamp>")
    options = options or Options()
    with file_lock(sweep_dir / ".report.lock"):
        finished, ignored = scan_sweep(sweep_dir)
        kept, refused = comparable(finished)
        ignored.update({name: f"not comparable: {why}" for name, why in refused.items()})
        runs = order_by_arch(kept)
        for stale in [*sweep_dir.glob(f".{REPORT_DIR}.tmp*"), *sweep_dir.glob(f".{REPORT_DIR}.old*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed report (this process holds the lock)
        tmp = sweep_dir / f".{REPORT_DIR}.tmp{os.getpid()}"
        tmp.mkdir()
        try:
            sections = _sections(runs, ignored, options, tmp)
            kill_point("report")
            _csv(
                pd.DataFrame(
                    {
                        "run": [r.name for r in runs] + list(ignored),
                        "status": ["finished"] * len(runs) + [status_of(why) for why in ignored.values()],
                        "reason": [""] * len(runs) + list(ignored.values()),
                    }
                ),
                tmp,
                "runs.csv",
            )
            head = f"# Sweep report: {sweep_dir.name}\n\n`{sweep_dir}`"
            atomic_write_text(tmp / "report.md", "\n\n".join([head, *(s.render() for s in sections)]) + "\n")
            out = _replace(tmp, sweep_dir / REPORT_DIR)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("sweep report: %d runs, %d ignored -> %s", len(runs), len(ignored), out / "report.md")
    return out


def _replace(tmp: Path, out: Path) -> Path:
    """Move the finished report into place over an older one."""
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
