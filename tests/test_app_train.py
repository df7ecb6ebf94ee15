"""Training end to end: fast_dev_run per architecture, determinism, W&B offline, a real multirun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from citylens.app.train import build_loggers, finish_loggers, train
from citylens.explain.store import open_store
from citylens.pipeline import Variant

FAST = ["experiment=smoke", "logger=none", "callbacks.progress_bar=null"]


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "simple", "simpler"])
def test_fast_dev_run_each_architecture(compose_cfg, arch: str, tmp_path: Path, cache_dir: Path):
    cfg = compose_cfg([*FAST, f"model={arch}", "+trainer.fast_dev_run=true"], tmp_path, cache_dir)
    result = train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["arch"] == arch and 0 <= metrics["test/acc"] <= 1
    assert metrics["cities"] == ["pittsburgh", "tokyo"]
    assert result["datamodule"].num_classes == 2
    rows = list(csv.DictReader(open(tmp_path / "split.csv")))
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 60


def test_same_seed_gives_same_weights(compose_cfg, tmp_path: Path, cache_dir: Path):
    weights = []
    for i, seed in enumerate((3, 3, 4)):
        cfg = compose_cfg([*FAST, "model=simple", f"seed={seed}", "test=false"], tmp_path / str(i), cache_dir)
        weights.append(train(cfg)["model"].network.state_dict())
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_wandb_offline_run_holds_the_logged_metrics_tables_and_checkpoint(
    compose_cfg, wandb_record, wandb_records, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    # Offline artifacts are staged under WANDB_DATA_DIR until `wandb sync`: keep them in the test's folder.
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    overrides = ["experiment=smoke", "logger=wandb", "logger.wandb.log_model=true", "model=simple"]
    cfg = compose_cfg(overrides, tmp_path, cache_dir)
    metrics = train(cfg)["metrics"]
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    record = wandb_record(runs[0])
    assert record["state"] == "finished" and record["name"] == "simple-s0" and record["project"] == "citylens"
    assert record["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert set(record["summary"]["val/acc"]) == {"max"} and "train/loss_epoch" in record["summary"]
    assert record["config"]["data"]["split_seed"] == 0 and record["config"]["model"]["arch"] == "simple"
    records = wandb_records(runs[0])
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "train"
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]

    # The best checkpoint, as Lightning's log_model stages it: the file itself, aliased "best".
    (best,) = [a for a in artifacts if a["type"] == "model" and "best" in a["aliases"]]
    assert json.loads(best["metadata"])["original_filename"] == "best.ckpt"
    (entry,) = best["manifest"]["contents"]
    assert int(entry["size"]) == (tmp_path / "checkpoints" / "best.ckpt").stat().st_size
    assert Path(entry["local_path"]).stat().st_size == int(entry["size"])

    # The per-image table: one row per test image, in the store's order, with its two thumbnails.
    files = runs[0].parent / "files" / "media" / "table"
    (images_file,) = files.glob("images_*.table.json")
    table = json.loads(images_file.read_text())
    columns = ["image_id", "city", "predicted", "probability", "x", "y", "overlay", "explanation"]
    assert table["columns"] == columns
    store = open_store(tmp_path)
    rows = pd.DataFrame(table["data"], columns=table["columns"])
    assert rows["image_id"].tolist() == store.image_ids and rows["city"].tolist() == store.cities
    assert rows["probability"].tolist() == pytest.approx(store.probs.max(axis=1).tolist())
    tsne = pd.read_csv(Variant().dir(tmp_path) / "tsne.csv")
    assert (
        rows["x"].tolist() == pytest.approx(tsne["x"].tolist())
        and rows["predicted"].tolist() == tsne["predicted"].tolist()
    )
    (staged,) = [a for a in artifacts if a["name"].endswith("-images")]
    by_path = {e["path"]: e["local_path"] for e in staged["manifest"]["contents"]}
    cells = json.loads(Path(by_path["images.table.json"]).read_text())["data"]
    assert len(cells) == len(store)
    for cell in (cells[0][-2], cells[-1][-1]):
        assert cell["_type"] == "image-file" and (cell["width"], cell["height"]) == (96, 96)
        assert Image.open(by_path[cell["path"]]).size == (96, 96)

    # The object ratios, as object_ratios.csv holds them.
    (ratios_file,) = files.glob("object_ratios_*.table.json")
    ratios = json.loads(ratios_file.read_text())
    logged = pd.DataFrame(ratios["data"], columns=ratios["columns"])
    expected = pd.read_csv(Variant().dir(tmp_path) / "object_ratios.csv")
    assert len(logged) == len(expected) and logged["object"].tolist() == expected["object"].tolist()
    assert logged["ratio"].tolist() == pytest.approx(expected["ratio"].tolist())

    # citylens-analyze builds its loggers with job_type analyze: a second W&B run of the same name.
    finish_loggers(build_loggers(cfg, tmp_path, job_type="analyze"))
    (again,) = set((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")) - set(runs)
    (run,) = [r["run"] for r in wandb_records(again) if r["type"] == "run"]
    assert run["job_type"] == "analyze" and run["display_name"] == "simple-s0"


def test_multirun_gives_one_dir_per_job_with_identical_test_ids(run_cli, tmp_path: Path):
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


def test_extra_variants_are_analysed_after_the_run_and_checked_first(run_cli, tmp_path: Path):
    run_cli(["experiment=smoke", "callbacks.progress_bar=null", "extra_variants=[layercam]"], tmp_path)
    (run,) = [p for p in (tmp_path / "out" / "runs").iterdir() if (p / "complete.json").is_file()]
    folders = sorted(p.name for p in (run / "analysis").iterdir())
    assert folders == ["gradcam-last_block-label-all-t0.5", "layercam-last_block-label-all-t0.5"]
    extra = open_store(run / "analysis" / folders[1])
    first = open_store(run / "analysis" / folders[0])
    assert extra.meta["explainer"] == "layercam" and first.meta["explainer"] == "gradcam"
    assert extra.image_ids == first.image_ids and len(extra.image_ids) > 0
    for name in ("object_ratios.csv", "faithfulness.csv", "residuals.csv"):
        assert (run / "analysis" / folders[1] / name).is_file(), name
    # The causal table is the run's: written once, by the run's own analysis.
    assert (run / "causal.csv").is_file() and not list((run / "analysis").glob("*/causal.csv"))

    bad = tmp_path / "bad"
    env = {**os.environ, "CITYLENS_OUTPUTS": str(bad / "out"), "CITYLENS_CACHE": str(bad / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "citylens.app.train", "experiment=smoke", "extra_variants=[nope]"],
        capture_output=True,
        text=True,
        env={**env, "WANDB_MODE": "offline"},
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-2000:]
    assert "extra_variants[0]" in output and "explainer/nope" in output
    # Refused before any data work: no dataset was generated.
    assert not (bad / "cache").exists() or not any((bad / "cache").iterdir())
