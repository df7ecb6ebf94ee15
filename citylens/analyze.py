"""`citylens-analyze RUN_DIR [overrides...]`: re-run a finished run's analysis with new settings, no training.

The run's own config (RUN_DIR/.hydra/overrides.yaml) is composed again with the new overrides appended,
e.g. `citylens-analyze outputs/runs/X analysis.threshold=0.3`; the analysis callbacks then run on the
run's best checkpoint exactly as they do after fit.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from citylens.callbacks.base import AnalysisCallback, best_checkpoint
from citylens.config import validate
from citylens.train import CONF_DIR, build_loggers, finish_loggers

log = logging.getLogger("citylens")


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose the run's original config with `overrides` appended; the run dir stays the same."""
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir}: not a citylens run dir (no .hydra/overrides.yaml)")
    original = yaml.safe_load(saved.read_text()) or []
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[*original, *overrides, f"paths.run_dir={run_dir}"])


def analyze(run_dir: Path | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every configured analysis callback on a finished run; return the config and checkpoint used."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, overrides or [])
    validate(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    checkpoint = best_checkpoint(run_dir)
    model_cls = instantiate(cfg.model, num_classes=datamodule.num_classes).__class__
    module = model_cls.load_from_checkpoint(checkpoint, map_location="cpu")
    module.eval()
    if torch.cuda.is_available():
        module.cuda()
    loggers = build_loggers(cfg, run_dir, job_type="analyze")
    try:
        for name, conf in (cfg.get("callbacks") or {}).items():
            if conf is None or not str(conf.get("_target_", "")).startswith("citylens.callbacks"):
                continue
            callback = instantiate(conf)
            if isinstance(callback, AnalysisCallback):
                log.info("analysis: %s on %s", name, checkpoint)
                callback.analyse(module, datamodule, run_dir, loggers)
    finally:
        finish_loggers(loggers)
    return {"config": cfg, "checkpoint": checkpoint}


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    analyze(Path(sys.argv[1]), sys.argv[2:])


if __name__ == "__main__":
    main()
