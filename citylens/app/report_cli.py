"""`citylens-report SWEEP_DIR [--wandb]`: build a sweep's report on demand (also `make report SWEEP=...`).

The report goes to SWEEP_DIR/report/. It is logged to W&B as a run of job_type `report` in the sweep's group
when --wandb is given or when the sweep's runs used the W&B logger (--no-wandb turns that off); the mode comes
from WANDB_MODE, offline by default, so nothing waits on the network unless asked to.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from citylens.app.run_views import view_reader
from citylens.pipeline.runs import candidate_dirs, is_sweep_dir
from citylens.report.examples import Views
from citylens.report.sweep import Options, build_report

log = logging.getLogger("citylens.report")


def uses_wandb(sweep_dir: Path | str) -> bool:
    """Whether any run of the sweep was configured with the W&B logger (its saved .hydra/config.yaml)."""
    for run_dir in candidate_dirs(Path(sweep_dir)):
        saved = run_dir / ".hydra" / "config.yaml"
        if (
            saved.is_file()
            and OmegaConf.select(OmegaConf.load(saved), "logger.wandb", default=None) is not None
        ):
            return True
    return False


def log_to_wandb(report_dir: Path, group: str, mode: str | None = None) -> str:
    """Log a built report as one W&B run (job_type `report`): figures as images, CSV tables as tables (Table 2
    as `table2`), and the whole folder (explorer included) as a `report` artifact.

    Offline runs are written under <sweep>/wandb/ (for `wandb sync`). Returns the W&B run's directory.
    """
    import wandb

    run = wandb.init(
        project="citylens",
        group=group,
        job_type="report",
        name=f"report-{group}",
        mode=mode or os.environ.get("WANDB_MODE", "offline"),
        dir=str(report_dir.parent),
    )
    try:
        payload: dict[str, object] = {p.stem: wandb.Image(str(p)) for p in sorted(report_dir.glob("*.png"))}
        for path in sorted(report_dir.glob("*.csv")):
            table = pd.read_csv(path)
            if len(table.columns):
                payload[path.stem] = wandb.Table(dataframe=table)
        run.log(payload)
        run.summary["report_md"] = (report_dir / "report.md").read_text()
        artifact = wandb.Artifact(f"report-{group}", type="report", description="the sweep report folder")
        artifact.add_dir(str(report_dir))
        run.log_artifact(artifact)
        return str(run.dir)
    finally:
        run.finish()


def report(
    sweep_dir: Path | str,
    wandb: bool | None = None,
    options: Options | None = None,
    views: Views | None = None,
) -> Path:
    """Build the report (views through `views`, see build_report); log it to W&B when `wandb` is True, or
    when None and the runs used W&B."""
    out = build_report(sweep_dir, options, views)
    if wandb or (wandb is None and uses_wandb(sweep_dir)):
        log.info("sweep report: logged to W&B in %s", log_to_wandb(out, Path(sweep_dir).resolve().name))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="citylens-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/sweeps/<stamp>")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--wandb", dest="wandb", action="store_true", default=None, help="log the report to W&B"
    )
    group.add_argument("--no-wandb", dest="wandb", action="store_false", help="never log to W&B")
    defaults = Options()
    parser.add_argument(
        "--n-boot", type=int, default=defaults.n_boot, help="bootstrap replicates per interval"
    )
    parser.add_argument("--n-perm", type=int, default=defaults.n_perm, help="permutations per test")
    parser.add_argument(
        "--examples-per-city",
        type=int,
        default=defaults.examples_per_city,
        help="sample test images per city in Figure 6",
    )
    parser.add_argument(
        "--no-explorer", dest="explorer", action="store_false", help="do not write report/explorer.html"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    args = parse_args(argv)
    if not is_sweep_dir(args.sweep_dir):
        print(
            f"citylens-report: {args.sweep_dir} is not a sweep folder (no multirun.yaml); "
            "give a multirun directory, e.g. outputs/sweeps/<stamp>",
            file=sys.stderr,
        )
        sys.exit(2)
    options = Options(
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        examples_per_city=args.examples_per_city,
        explorer=args.explorer,
    )
    out = report(args.sweep_dir, args.wandb, options, view_reader)
    print(out / "report.md")


if __name__ == "__main__":
    main()
