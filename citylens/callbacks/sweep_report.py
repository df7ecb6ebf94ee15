"""The Hydra callback that builds the sweep report when a multirun ends (conf/hydra/default.yaml).

A failing report is logged with its traceback and never raised: the runs' results are already on disk, and
`citylens-report <sweep dir>` rebuilds the report once the cause is fixed. The report modules are imported
only when a multirun ends, so single runs pay nothing for this callback.
"""

from __future__ import annotations

import logging
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
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            from citylens.report.cli import report
            from citylens.report.sweep import Options

            options = Options(
                n_boot=self.n_boot,
                n_perm=self.n_perm,
                examples_per_city=self.examples_per_city,
                explorer=self.explorer,
            )
            out = report(sweep_dir, self.wandb, options)
            log.info("sweep report: %s", out / "report.md")
        except Exception:
            log.exception(
                "sweep report for %s failed; the runs are intact, rebuild with: citylens-report %s",
                sweep_dir,
                sweep_dir,
            )
