"""Training end to end: fast_dev_run per architecture, determinism, W&B offline, a real multirun."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from citylens.train import train
from tests.conftest import compose_cfg, run_cli, wandb_record

FAST = ["experiment=smoke", "logger=none", "callbacks.progress_bar=null"]


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "simple", "simpler"])
def test_fast_dev_run_each_architecture(arch: str, tmp_path: Path, cache_dir: Path):
    cfg = compose_cfg([*FAST, f"model={arch}", "+trainer.fast_dev_run=true"], tmp_path, cache_dir)
    result = train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["arch"] == arch and 0 <= metrics["test/acc"] <= 1
    assert metrics["cities"] == ["pittsburgh", "tokyo"]
    assert result["datamodule"].num_classes == 2
    rows = list(csv.DictReader(open(tmp_path / "split.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 60


def test_same_seed_gives_same_weights(tmp_path: Path, cache_dir: Path):
    weights = []
    for i, seed in enumerate((3, 3, 4)):
        cfg = compose_cfg([*FAST, "model=simple", f"seed={seed}", "test=false"], tmp_path / str(i), cache_dir)
        weights.append(train(cfg)["model"].network.state_dict())
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_wandb_offline_run_holds_the_logged_metrics(tmp_path: Path, cache_dir: Path):
    cfg = compose_cfg(["experiment=smoke", "logger=wandb", "model=simple"], tmp_path, cache_dir)
    metrics = train(cfg)["metrics"]
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    record = wandb_record(runs[0])
    assert record["state"] == "finished" and record["name"] == "simple-s0" and record["project"] == "citylens"
    assert record["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert "val/acc" in record["summary"] and "train/loss_epoch" in record["summary"]
    assert record["config"]["data"]["split_seed"] == 0 and record["config"]["model"]["arch"] == "simple"


def test_multirun_gives_one_dir_per_job_with_identical_test_ids(tmp_path: Path):
    run_cli(
        ["-m", "experiment=smoke", "model=simple,resnet18", "seed=0,1", "callbacks.progress_bar=null"],
        tmp_path,
    )
    sweeps = list((tmp_path / "out" / "sweeps").iterdir())
    assert len(sweeps) == 1
    runs = sorted(p for p in sweeps[0].iterdir() if (p / "metrics.json").is_file())
    assert [p.name for p in runs] == ["0_simple-s0", "1_simple-s1", "2_resnet18-s0", "3_resnet18-s1"]
    test_ids = []
    for run in runs:
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        rows = list(csv.DictReader(open(run / "split.csv")))
        test_ids.append([r["image_id"] for r in rows if r["split"] == "test"])
    assert all(ids == test_ids[0] for ids in test_ids) and test_ids[0]
