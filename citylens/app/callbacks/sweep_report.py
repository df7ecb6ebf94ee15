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

    def __init__(self, enabled: bool = True, wandb: bool | None = None, options: Any = None) -> None:
        """options: fields of citylens.report.sweep.Options (the report's settings; its defaults for the
        rest), kept as a mapping so that the report modules load only when a multirun ends."""
        self.enabled, self.wandb, self.options = enabled, wandb, dict(options or {})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if self.enabled:
            self._report(sweep_dir)
        exit_on_failed_jobs(sweep_dir)

    def _report(self, sweep_dir: Path) -> None:
        try:
            from citylens.app.report_cli import report
            from citylens.app.run_views import view_reader
            from citylens.report.sweep import Options

            out = report(sweep_dir, self.wandb, Options(**self.options), view_reader)
            log.info("sweep report: %s", out / "report.md")
        except Exception:
            log.exception(
                "sweep report for %s failed; the runs are intact, rebuild with: citylens-report %s",
                sweep_dir,
                sweep_dir,
            )


def exit_on_failed_jobs(sweep_dir: Path) -> None:
    """Log every failed or unfinished job of the sweep with its error line; exit with status 1 if any."""
    from citylens.core.run_folder import run_status
    from citylens.pipeline.runs import candidate_dirs

    bad = {}
    for run_dir in candidate_dirs(sweep_dir) if sweep_dir.is_dir() else []:
        status = run_status(run_dir)
        if status.state != "finished":
            bad[run_dir.name] = str(status)
    if bad:
        for name, why in bad.items():
            log.error("job %s %s", name, why)
        log.error("%d job(s) of %s did not finish; rerun the same command to retry them", len(bad), sweep_dir)
        sys.exit(1)
