"""`citylens-analyze RUN_DIR [overrides...]`: re-run a finished run's analysis with new settings, no training.

The run's recorded overrides (RUN_DIR/.hydra/overrides.yaml, refused if they name code) are composed again on
citylens' own config files with the new overrides appended, e.g. `citylens-analyze outputs/runs/X
analysis.threshold=0.3`; the analysis steps then run on the run's best checkpoint (last.ckpt when
best.ckpt is damaged) exactly as they do after fit, and the run's completion record is rewritten. Nothing
saved in the run folder is instantiated (docs/faults.md).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate

from citylens.app.callbacks.analysis import run_steps
from citylens.app.config import ConfigError, run_config, validate
from citylens.app.train import build_loggers, finish_loggers
from citylens.core.run_folder import best_checkpoint, clean_temps, write_complete

log = logging.getLogger("citylens")


def analyze(run_dir: Path | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the configured analysis steps on a finished run; return the config and checkpoint used."""
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
    clean_temps(run_dir)
    loggers = build_loggers(cfg, run_dir, job_type="analyze")
    failed = True
    try:
        log.info("analysis of %s", checkpoint)
        if cfg.get("analysis") is not None:
            run_steps(cfg, module, datamodule, run_dir, loggers, str(checkpoint))
        failed = False
    finally:
        finish_loggers(loggers, failed)
    recorded = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    write_complete(
        run_dir,
        {"written_by": "citylens-analyze", "overrides": recorded, "analyze_overrides": list(overrides or [])},
    )
    return {"config": cfg, "checkpoint": checkpoint}


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    try:
        analyze(Path(sys.argv[1]), sys.argv[2:])
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"citylens-analyze: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
