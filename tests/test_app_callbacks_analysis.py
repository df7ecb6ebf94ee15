"""The Lightning adapter of the after-fit analysis: rank-0 work behind a barrier, the steps of a composed
config run on a trained network with their tables and figures sent to W&B-like loggers, and skipped when
run again on the same checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from pytorch_lightning import loggers as pl_loggers

from citylens.app.callbacks.analysis import log_image_table, on_rank_zero, run_steps


class WandbLogger(pl_loggers.WandbLogger):
    """Stands in for W&B's Lightning logger (no W&B run): records what it is given."""

    def __init__(self) -> None:  # no W&B run is started
        self.images: dict[str, list[str]] = {}
        self.tables: dict[str, dict] = {}

    def log_image(self, key: str, images: list[str]) -> None:
        self.images[key] = images

    def log_table(self, key: str, columns=None, data=None, dataframe=None) -> None:
        self.tables[key] = {"columns": columns, "data": data, "dataframe": dataframe}


class Trainer:
    def __init__(self, rank: int) -> None:
        self.is_global_zero, self.barriers = rank == 0, []
        self.strategy = SimpleNamespace(barrier=lambda name: self.barriers.append(name))


def test_rank_zero_works_while_the_others_wait_also_when_the_work_fails():
    done = []
    for rank in (0, 1):
        trainer = Trainer(rank)
        on_rank_zero(trainer, lambda rank=rank: done.append(rank))
        assert trainer.barriers == ["citylens-analysis"]
    assert done == [0]
    trainer = Trainer(0)
    with pytest.raises(RuntimeError, match="boom"):
        on_rank_zero(trainer, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert trainer.barriers == ["citylens-analysis"]  # the other ranks are released


def test_image_table_rows_get_their_images_in_order():
    logger = WandbLogger()
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "city": ["x", "y", "x"]})
    pixels = np.repeat(np.array([10, 120, 240], np.uint8), 8 * 8 * 3).reshape(3, 8, 8, 3)
    log_image_table([logger, object()], "images", frame, iter([{"view": pixels[:2]}, {"view": pixels[2:]}]))
    table = logger.tables["images"]
    assert table["columns"] == ["image_id", "city", "view"]
    assert [row[:2] for row in table["data"]] == [["a", "x"], ["b", "y"], ["c", "x"]]
    shown = [float(np.asarray(row[2].image).mean()) for row in table["data"]]
    assert shown == pytest.approx([10, 120, 240], abs=3)  # JPEG


def test_analyse_runs_the_configured_steps_logs_them_and_skips_them_when_current(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    cfg = compose_cfg(
        [
            "experiment=smoke",
            "model=simple",
            "analysis.steps.faithfulness.sanity=false",
            "explainer.layer=last_conv",
        ],
        tmp_path / "run",
        tmp_path / "cache",
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    torch.manual_seed(0)
    module = instantiate(cfg.model, num_classes=datamodule.num_classes).eval()
    checkpoint = tmp_path / "best.ckpt"
    torch.save(module.state_dict(), checkpoint)
    logger = WandbLogger()
    run_steps(cfg, module, datamodule, tmp_path / "run", [logger], str(checkpoint))
    out = tmp_path / "run" / "analysis" / "gradcam-last_conv-label-all-t0.5"
    assert (out / "object_ratios.csv").is_file() and (tmp_path / "run" / "causal.csv").is_file()
    assert {"tsne", "object_ratios", "causal", "faithfulness", "residuals", "concepts", "images"} <= set(
        logger.tables
    )
    assert len(logger.tables["images"]["data"]) == len(datamodule.splits["test"])
    assert logger.images["fig3_tsne"] == [str(out / "figures" / "fig3_tsne.png")]
    before = (out / "object_ratios.csv").stat().st_mtime_ns
    again = WandbLogger()
    with caplog.at_level(logging.INFO, logger="citylens.analysis"):
        run_steps(cfg, module, datamodule, tmp_path / "run", [again], str(checkpoint))
    assert (out / "object_ratios.csv").stat().st_mtime_ns == before
    assert set(again.tables) == {"residuals"}  # never cached: it reads whichever runs have finished
    assert caplog.text.count("already done with these inputs") == 5  # all but the residuals
