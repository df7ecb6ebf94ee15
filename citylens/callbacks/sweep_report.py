"""The Hydra callback that builds the sweep report when a multirun ends (conf/hydra/default.yaml).

A failing report is logged with its traceback and never raised: the runs' results are already on disk, and
`citylens-report <sweep dir>` rebuilds the report once the cause is fixed. Then every job of the sweep is
checked: when one failed or did not finish, their error lines are logged and the process exits with status 1
(after the report, so the report always exists). The report modules are imported only when a multirun ends,
so single runs pay nothing for this callback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("citylens.report")


class SweepReportCallback(Callback):
    """Builds <sweep dir>/report/ at the end of every multirun, logged to W&B as `citylens-report` does."""

    def __init__(
        self,
        enabled: bool = True,
        wandb: bool | None = None,
        n_boot: int = 1000,
        n_perm: int = 10000,
        examples_per_city: int = 2,
        explorer: bool = True,
    ) -> None:
        self.enabled, self.wandb = enabled, wandb
        self.n_boot, self.n_perm, self.examples_per_city = n_boot, n_perm, examples_per_city
        self.explorer = explorer

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self.enabled:
            self._report(sweep_dir)
        exit_on_failed_jobs(sweep_dir)

    def _report(self, sweep_dir: Path) -> None:
        try:
            from citylens.report.cli import report
            from citylens.report.sweep import Options
            from citylens.run_views import view_reader

            options = Options(
                n_boot=self.n_boot,
                n_perm=self.n_perm,
                examples_per_city=self.examples_per_city,
                explorer=self.explorer,
            )
            out = report(sweep_dir, self.wandb, options, view_reader)
            log.info("sweep report: %s", out / "report.md")
        except Exception:
            log.exception(
                "sweep report for %s failed; the runs are intact, rebuild with: citylens-report %s",
                sweep_dir,
                sweep_dir,
            )


def exit_on_failed_jobs(sweep_dir: Path) -> None:
    """Log every failed or unfinished job of the sweep with its error line; exit with status 1 if any."""
    from citylens.pipeline.runs import candidate_dirs
    from citylens.run_state import run_status

    bad = {}
    for run_dir in candidate_dirs(sweep_dir) if sweep_dir.is_dir() else []:
        status, why = run_status(run_dir)
        if status != "finished":
            bad[run_dir.name] = f"{status}: {why}"
    if bad:
        for name, why in bad.items():
            log.error("job %s %s", name, why)
        log.error("%d job(s) of %s did not finish; rerun the same command to retry them", len(bad), sweep_dir)
        sys.exit(1)
