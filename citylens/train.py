"""The Hydra entry point (`citylens-train`): fit one city classifier, test its best checkpoint, analyse.

`train(cfg)` is a plain function returning the metrics and objects, so tests and notebooks call it
directly with a config composed by Hydra's compose API.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import citylens
from citylens.config import ConfigError, validate
from citylens.io import atomic_write_json

log = logging.getLogger("citylens")


def sweep_name(run_dir: Path) -> str:
    """The group a run belongs to: its sweep's directory name in a multirun, else its own name."""
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return Path(HydraConfig.get().sweep.dir).name
    return run_dir.name


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """Instantiate the configured loggers, saving under the run dir and grouping W&B runs by sweep."""
    loggers = []
    for name, conf in (cfg.get("logger") or {}).items():
        if conf is None:
            continue
        if name == "wandb":
            group = conf.get("group") or sweep_name(run_dir)
            config = OmegaConf.to_container(cfg, resolve=True)
            logger = instantiate(conf, group=group, save_dir=str(run_dir), dir=str(run_dir))
            logger.experiment.config.update(config, allow_val_change=True)
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
    datamodule.write_split(run_dir)
    pl.seed_everything(cfg.seed, workers=True)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    loggers = build_loggers(cfg, run_dir)
    callbacks = build_callbacks(cfg, run_dir)
    trainer = instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir)
    )
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics: dict[str, Any] = {"arch": cfg.model.arch, "seed": cfg.seed, "run_dir": str(run_dir)}
        if cfg.get("test", True):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            tested = trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
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
    return {"metrics": metrics, "trainer": trainer, "model": model, "datamodule": datamodule}


# An absolute path: the configs live in the source tree next to the package (installed editable).
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
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
