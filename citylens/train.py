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
from citylens.config import ConfigError, analysis_variant, validate
from citylens.io import atomic_write_json

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


def finish_loggers(loggers: list[Any]) -> None:
    """Close W&B runs so each job of a multirun becomes its own W&B run."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test with the best checkpoint, write metrics.json; return metrics and the objects used."""
    validate(cfg)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    pl.seed_everything(cfg.seed, workers=True)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    loggers = build_loggers(cfg, run_dir)
    callbacks = build_callbacks(cfg, run_dir)
    trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir)
    )
    # Under DDP every rank runs train(); only global rank 0 writes the run's files.
    if trainer.is_global_zero:
        datamodule.write_split(run_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics: dict[str, Any] = {"arch": cfg.model.arch, "seed": cfg.seed, "run_dir": str(run_dir)}
        if cfg.get("analysis") is not None:
            metrics["variant"] = analysis_variant(cfg).name
        tested: list[dict[str, Any]] = []
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.get("test", True):
            tested = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        if cfg.get("test", True) and trainer.is_global_zero:
            metrics.update({k: float(v) for k, v in tested[0].items()})
            metrics.update(
                best_checkpoint=best,
                cities=datamodule.cities,
                dataset_fingerprint=datamodule.fingerprint,
                n_test=len(datamodule.splits["test"]),
                citylens_version=citylens.__version__,
            )
            atomic_write_json(run_dir / "metrics.json", metrics)
            log.info(
                "test accuracy %.4f (%s, seed %s) -> %s",
                metrics["test/acc"],
                cfg.model.arch,
                cfg.seed,
                run_dir,
            )
    finally:
        finish_loggers(loggers)
        # A multirun runs its next job in this process: leave no DDP process group behind.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return {"metrics": metrics, "trainer": trainer, "model": model, "datamodule": datamodule}


def conf_dir() -> str:
    """The configs: citylens/conf inside an installed wheel, else the checkout's top-level conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "conf")


CONF_DIR = conf_dir()


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


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        with relaunchable_job():
            result = train(cfg)
    except ConfigError as err:
        log.error("config error: %s", err)
        sys.exit(2)
    return result["metrics"].get("test/acc")


def main() -> None:
    """Console-script entry point."""
    _hydra_main()


if __name__ == "__main__":
    main()
