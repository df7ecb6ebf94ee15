"""The Hydra entry point (`citylens-train`): fit one city classifier, test its best checkpoint, analyse.

`train(cfg)` is a plain function returning the metrics and objects, so tests and notebooks call it
directly with a config composed by Hydra's compose API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, read_write
from pytorch_lightning.utilities.rank_zero import rank_zero_only

import citylens
from citylens.app.callbacks.analysis import AnalysisCallback, run_steps
from citylens.app.callbacks.checkpoint import AtomicCheckpointIO, ResumeState
from citylens.app.config import (
    CONF_DIR,
    ConfigError,
    analysis_variant,
    extra_variant_configs,
    preflight,
    validate,
)
from citylens.core.io import atomic_write_json, read_json
from citylens.core.lazy import wandb_loggers
from citylens.core.memory import reuse_freed_memory
from citylens.core.run_folder import (
    COMPLETE,
    FAILED,
    best_checkpoint,
    clean_temps,
    error_line,
    read_complete,
    resume_checkpoint,
    write_complete,
    write_failed,
)

log = logging.getLogger("citylens")


def sweep_name(run_dir: Path) -> str:
    """The group a run belongs to: its sweep's directory name in a multirun, else its own name."""
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return Path(HydraConfig.get().sweep.dir).name
    return run_dir.name


def build_loggers(cfg: DictConfig, run_dir: Path, job_type: str | None = None) -> list[Any]:
    """Instantiate the configured loggers, saving under the run dir and grouping W&B runs by sweep.

    `job_type` overrides the W&B run's job type (logger.wandb.job_type, `train`): citylens-analyze passes
    `analyze`. W&B summarises val/acc by its maximum (the best epoch), not its last value.
    """
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None:
            continue
        if name == "wandb":
            group = conf.get("group") or sweep_name(run_dir)
            config = OmegaConf.to_container(cfg, resolve=True)
            extra = {"job_type": job_type} if job_type else {}
            logger = instantiate(conf, group=group, save_dir=str(run_dir), dir=str(run_dir), **extra)
            if rank_zero_only.rank == 0:
                logger.experiment.config.update(config, allow_val_change=True)
                logger.experiment.define_metric("val/acc", summary="max")
        else:
            logger = instantiate(conf, save_dir=str(run_dir))
        loggers.append(logger)
    return loggers


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    """Instantiate the configured callbacks; checkpoints go to <run dir>/checkpoints."""
    callbacks = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if conf is None:
            continue
        kwargs = {"dirpath": str(run_dir / "checkpoints")} if name == "model_checkpoint" else {}
        callbacks.append(instantiate(conf, **kwargs))
    return callbacks


def finish_loggers(loggers: list[Any], failed: bool = False) -> None:
    """Close W&B runs (one W&B run per job of a multirun); a failed job's run ends with exit code 1."""
    for logger in wandb_loggers(loggers):
        logger.experiment.finish(exit_code=1 if failed else 0)


def job_overrides() -> list[str]:
    """This job's command-line overrides (Hydra's task overrides), empty outside Hydra."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


class MetricsWriter(pl.Callback):
    """Writes metrics.json right after the test, before the analysis callbacks (which run after it), so a run
    killed during its analysis keeps its test metrics and `citylens-analyze` can finish it."""

    def __init__(self, run_dir: Path, facts: dict[str, Any]) -> None:
        self.run_dir, self.facts, self.metrics = run_dir, facts, dict(facts)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tested = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        self.metrics = {**self.facts, **tested, "best_checkpoint": trainer.ckpt_path or ""}
        if trainer.is_global_zero:
            atomic_write_json(self.run_dir / "metrics.json", self.metrics)


def finished_run(run_dir: Path) -> dict[str, Any] | None:
    """The metrics of a run that already finished with this job's overrides, or None to (re)run it.

    A finished run with other overrides is refused: rerunning a sweep into its own folder must not mix runs.
    """
    record = read_complete(run_dir)
    if record is None:
        return None
    recorded, now = record.get("overrides"), job_overrides()
    if recorded is not None and sorted(recorded) != sorted(now):
        raise ConfigError(
            f"{run_dir}: finished already with other overrides ({' '.join(recorded)}); "
            "give another hydra.sweep.dir / hydra.run.dir, or delete the folder to redo it"
        )
    log.info("already finished, skipped: %s (delete its %s to redo it)", run_dir, COMPLETE)
    return read_json(run_dir / "metrics.json") or {}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming an interrupted run in place), test the best checkpoint, analyse, mark the run complete.

    Every check that needs no data runs first (validate, loggers, callbacks with the segmenter, trainer),
    then the data is prepared. A run folder holding complete.json is skipped; one holding checkpoints resumes
    from the newest loadable one with its best-model record (docs/faults.md).
    """
    validate(cfg)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = finished_run(run_dir)
    if done is not None:
        return {"metrics": done, "skipped": True}
    if rank_zero_only.rank == 0:
        clean_temps(run_dir)
        (run_dir / FAILED).unlink(missing_ok=True)
    ckpt_path = cfg.get("ckpt_path") or resume_checkpoint(run_dir)
    if ckpt_path and not cfg.get("ckpt_path"):
        log.info("resuming %s from %s", run_dir, ckpt_path)
    extras = extra_variant_configs(cfg, run_dir)
    loggers = build_loggers(cfg, run_dir)
    failed = True
    try:
        facts = {"arch": cfg.model.arch, "seed": cfg.seed, "run_dir": str(run_dir)}
        if cfg.get("analysis") is not None:
            facts["variant"] = analysis_variant(cfg).name
        writer = MetricsWriter(run_dir, facts)
        callbacks = [writer, ResumeState(), *build_callbacks(cfg, run_dir)]
        if cfg.get("analysis") is not None:
            callbacks.append(AnalysisCallback(cfg))
        trainer = instantiate(
            cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir)
        )
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        writer.facts.update(
            cities=datamodule.cities,
            dataset_fingerprint=datamodule.fingerprint,
            n_test=len(datamodule.splits["test"]),
            citylens_version=citylens.__version__,
        )
        pl.seed_everything(cfg.seed, workers=True)
        model = instantiate(cfg.model, num_classes=datamodule.num_classes)
        # Under DDP every rank runs train(); only global rank 0 writes the run's files.
        if trainer.is_global_zero:
            datamodule.write_split(run_dir)
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        if cfg.get("test", True):
            best = best_checkpoint(run_dir) if trainer.checkpoint_callback else None
            trainer.test(model, datamodule=datamodule, ckpt_path=str(best) if best else None, verbose=False)
            log.info(
                "test accuracy %.4f (%s, seed %s) -> %s",
                writer.metrics.get("test/acc", float("nan")),
                cfg.model.arch,
                cfg.seed,
                run_dir,
            )
            for extra in extras if trainer.is_global_zero else []:
                run_steps(extra, model.eval(), datamodule, run_dir, loggers, trainer.ckpt_path)
        failed = False
    finally:
        finish_loggers(loggers, failed)
        # A multirun runs its next job in this process: leave no DDP process group behind.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if trainer.is_global_zero:
        write_complete(run_dir, {"written_by": "citylens-train", "overrides": job_overrides()})
    metrics = writer.metrics if cfg.get("test", True) else facts
    return {"metrics": metrics, "trainer": trainer, "model": model, "datamodule": datamodule}


# Set in this process by Lightning's DDP launcher; a later job finding LOCAL_RANK would not start its ranks.
DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def relaunchable_job() -> Iterator[None]:
    """Let Lightning's DDP launcher run each job of a multirun.

    The launcher starts ranks > 0 as `<this command> hydra.run.dir=<hydra.run.dir>`, which in a multirun
    would start the whole sweep again elsewhere; so while the job runs, the command is this job's own
    overrides and hydra.run.dir is this job's output dir. Afterwards the DDP variables the launcher set are
    restored, so the next job in this process launches its own ranks. Single runs need nothing.
    """
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, env = sys.argv, {key: os.environ.get(key) for key in DDP_ENV}
    sys.argv = [argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_preset() -> None:
    """Refuse a preset that defines a sweep (experiment=demo, paper) run without -m: it would silently run
    one of its jobs."""
    hydra_cfg = HydraConfig.get()
    params = hydra_cfg.sweeper.get("params") if "sweeper" in hydra_cfg else None
    given = {o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task}
    # One job of the sweep (every swept key given, e.g. model=vgg11 seed=0 under srun) is a single run.
    if hydra_cfg.mode == RunMode.RUN and params and not set(params) <= given:
        choice = hydra_cfg.runtime.choices.get("experiment")
        sweep = ", ".join(f"{k}={v}" for k, v in params.items())
        raise ConfigError(
            f"experiment={choice}: defines a sweep ({sweep}); run it with -m: "
            f"citylens-train -m {' '.join(hydra_cfg.overrides.task)}"
        )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One job. Its failure is its own: recorded in <run dir>/failed.json; in a multirun the next job runs
    and the sweep ends with exit status 1 (callbacks/sweep_report.py); a single run's ConfigError is one line
    and exit status 2 (HYDRA_FULL_ERROR=1 shows the traceback)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        check_preset()
        if cfg.get("reuse_freed_memory") is True:  # any other value: train's validate names it
            reuse_freed_memory()
        with relaunchable_job():
            result = train(cfg)
    except Exception as err:
        if rank_zero_only.rank == 0 and run_dir.is_dir() and read_complete(run_dir) is None:
            write_failed(run_dir, err)
        if multirun:
            log.error(
                "job %s failed: %s (see %s)", run_dir.name, error_line(err), run_dir / FAILED, exc_info=full
            )
            return None
        if isinstance(err, ConfigError) and not full:
            log.error("%s", error_line(err))
            sys.exit(2)
        raise
    return result["metrics"].get("test/acc")


def main() -> None:
    """Console-script entry point: checks the command line (launcher plugins, resume=DIR), then Hydra."""
    try:
        sys.argv = [sys.argv[0], *preflight(sys.argv[1:])]
    except ConfigError as err:
        print(f"citylens-train: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
