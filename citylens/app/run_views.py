"""A finished run's analysis views, read from its data as its recorded config describes it (adapter level).

The data module is re-created from the run's recorded overrides on citylens' own config files
(citylens.app.config.run_config: overrides naming code are refused, nothing saved in the run folder is
instantiated), so the views are the images the run's explainer saw. The data cache folder is looked up where
the run had it. The report CLI and the sweep-report callback pass `view_reader` to the report
(citylens.report.sweep.build_report), which itself stays below the config layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from citylens.app.config import run_config
from citylens.pipeline.runs import Run
from citylens.report.examples import ViewReader

log = logging.getLogger("citylens.report")


def _cache_dir(run: Run, configured: str) -> str:
    """The run's data cache folder: as configured, else relative to the run's working dir, else the synthetic
    data's parent folder recorded in the store."""
    candidates = [Path(configured).expanduser()]
    hydra_yaml = run.path / ".hydra" / "hydra.yaml"
    if not candidates[0].is_absolute() and hydra_yaml.is_file():
        cwd = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd", default=None)
        if cwd:
            candidates.insert(0, Path(cwd) / configured)
    root = (run.store.meta.get("dataset") or {}).get("root")
    if root:
        candidates.append(Path(root).parent)
    return str(next((c for c in candidates if c.is_dir()), candidates[0]))


def view_reader(run: Run) -> ViewReader | None:
    """A reader of the run's analysis views by image id, of any split (uint8 (n, S, S, 3)), or None (with a
    warning) if the data is unavailable. The data module is set up once, so a caller reading many chunks pays
    for it once."""
    saved = run.path / ".hydra" / "config.yaml"
    try:
        recorded = OmegaConf.load(saved) if saved.is_file() else OmegaConf.create()
        configured = OmegaConf.select(recorded, "data.cache_dir", default="data_cache")
        cfg = run_config(run.path, [])
        cfg.data.cache_dir = _cache_dir(run, str(configured))
        datamodule = instantiate(cfg.data)
        datamodule.setup("test")
        splits = [datamodule.split_view(name) for name in datamodule.splits]
    except Exception as err:  # any failure costs only the background images, not the report
        log.warning("no images for %s (%s: %s); drawing the masks alone", run.name, type(err).__name__, err)
        return None
    where = {image_id: (split, i) for split in splits for i, image_id in enumerate(split.ids)}
    return lambda image_ids: np.stack([where[i][0].views([where[i][1]])[0] for i in image_ids])
