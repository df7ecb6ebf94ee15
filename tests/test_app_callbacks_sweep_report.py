"""SweepReportCallback: the report at multirun end (hand-made and one real sweep); failures logged or exit 1.

The real sweep (2 architectures x 2 seeds, smoke settings) runs once per module as a subprocess; its report is
built by the Hydra callback at multirun end, then rebuilt on demand with `citylens-report`; the residuals its
runs wrote are checked here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from citylens.app.callbacks.sweep_report import SweepReportCallback
from citylens.core.errors import ConfigError
from citylens.core.run_folder import write_failed
from citylens.report.sweep import Options

FAST = Options(n_boot=200, n_perm=1000, examples_per_city=1)


def test_hydra_callback_logs_a_failing_report_without_raising(
    hand_masks, make_run, make_sweep, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}})
    SweepReportCallback().on_multirun_end(config)
    assert "sweep report for" in caplog.text and "citylens-report" in caplog.text
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    SweepReportCallback(wandb=False, options={"n_boot": 50, "n_perm": 100}).on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    )
    assert (sweep / "report" / "report.md").is_file()
    SweepReportCallback(enabled=False).on_multirun_end(config)


def test_a_failed_job_is_listed_with_its_error_and_the_sweep_exits_1(
    hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simpler-s0", "simpler", 0, hand_masks["B"])
    write_failed(sweep / "2_simple-s1", ConfigError("model.lr: learning rate must be positive, got -1"))
    make_run(sweep / "3_simpler-s1", "simpler", 1, hand_masks["B"], finished=False)
    with pytest.raises(SystemExit) as exit_info:
        SweepReportCallback(wandb=False, options={"n_boot": 50, "n_perm": 100}).on_multirun_end(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
        )
    assert exit_info.value.code == 1
    runs = pd.read_csv(sweep / "report" / "runs.csv").set_index("run")
    assert runs["status"].to_dict() == {
        "0_simple-s0": "finished",
        "1_simpler-s0": "finished",
        "2_simple-s1": "failed",
        "3_simpler-s1": "unfinished",
    }
    assert runs.loc["2_simple-s1", "reason"] == "failed: model.lr: learning rate must be positive, got -1"
    assert (
        "`2_simple-s1`: failed: model.lr: learning rate must be positive"
        in (sweep / "report" / "report.md").read_text()
    )
    assert len(pd.read_csv(sweep / "report" / "table2.csv")) == 1


@pytest.fixture(scope="module")
def sweep(run_cli, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One small real sweep: simple, simpler x seeds 0, 1 (its report built by the Hydra callback)."""
    root = tmp_path_factory.mktemp("report_sweep")
    # 3 epochs at lr 3e-4: at the smoke defaults (1 epoch, lr 1e-3) a network's masks can be all zero.
    args = [
        "-m",
        "experiment=smoke",
        "model=simple,simpler",
        "seed=0,1",
        "logger=csv",
        "callbacks.progress_bar=null",
        "trainer.max_epochs=3",
        "model.lr=3e-4",
    ]
    proc = run_cli(args, root)
    env = {
        **os.environ,
        "CITYLENS_OUTPUTS": str(root / "out"),
        "CITYLENS_CACHE": str(root / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    (sweep_dir,) = list((root / "out" / "sweeps").iterdir())
    return SimpleNamespace(dir=sweep_dir, env=env, log=proc.stdout + proc.stderr)


def test_last_run_residuals_against_the_three_earlier_runs(default_variant, sweep: SimpleNamespace):
    table = pd.read_csv(default_variant.dir(sweep.dir / "3_simpler-s1") / "residuals.csv")
    assert table["run_b"].tolist() == ["0_simple-s0", "1_simple-s1", "2_simpler-s0"]
    assert (table["run_a"] == "3_simpler-s1").all() and table["arch_b"].tolist() == [
        "simple",
        "simple",
        "simpler",
    ]
    assert ((table["ar"] > 0) & (table["ar"] < 1)).all() and (table["n_images"] == 12).all()
    first = pd.read_csv(default_variant.dir(sweep.dir / "0_simple-s0") / "residuals.csv")
    assert first.empty and "ar" in first.columns


def test_hydra_callback_built_the_report_at_multirun_end(default_variant, sweep: SimpleNamespace):
    report = sweep.dir / "report"
    assert (report / "report.md").is_file(), sweep.log[-3000:]
    text = (report / "report.md").read_text()
    for label in ("simple-s0", "simple-s1", "simpler-s0", "simpler-s1"):
        assert label in text
    pairs = pd.read_csv(report / "table2.csv")
    assert len(pairs) == 6 and pairs["group"].value_counts().to_dict() == {"architecture": 4, "seed": 2}
    seed_pairs = pairs[pairs["group"] == "seed"]
    assert (seed_pairs["arch_a"] == seed_pairs["arch_b"]).all()
    last = pd.read_csv(default_variant.dir(sweep.dir / "3_simpler-s1") / "residuals.csv").set_index("run_b")[
        "ar"
    ]
    for run_b, ar in last.items():
        row = pairs[(pairs["run_a"] == run_b) & (pairs["run_b"] == "3_simpler-s1")]
        assert row["ar"].iloc[0] == pytest.approx(ar, rel=1e-9)
    for name in (
        "table2_heatmap.png",
        "fig3_tsne_runs.png",
        "fig5_ratios_runs.png",
        "fig6_examples_runs.png",
    ):
        assert (report / name).stat().st_size > 10_000
    assert "masks are drawn alone" not in text and "recovery" in text
    assert len(pd.read_csv(report / "recovery.csv")) == 8
    # The explorer, with the runs' own test images (read through the data module of the first run).
    assert "explorer.html" in text and (report / "explorer.html").stat().st_size > 1_000_000
    (images,) = list((report / "explorer").glob("image_*.jpg"))
    assert np.asarray(Image.open(images)).std() > 10
    assert len(list((report / "explorer").glob("r*_*.jpg"))) == 8


def test_citylens_report_lists_an_unfinished_run_and_logs_to_wandb(
    wandb_record, wandb_records, sweep: SimpleNamespace
):
    copy = sweep.dir / "4_simple-s2"
    shutil.copytree(sweep.dir / "0_simple-s0", copy)
    (copy / "complete.json").unlink()
    exe = Path(sys.executable).with_name("citylens-report")
    proc = subprocess.run(
        [str(exe), str(sweep.dir), "--wandb", "--n-boot", "200"],
        capture_output=True,
        text=True,
        env=sweep.env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (sweep.dir / "report" / "report.md").read_text()
    assert "`4_simple-s2`: unfinished: no complete.json" in text
    runs = pd.read_csv(sweep.dir / "report" / "runs.csv")
    assert runs.set_index("run")["status"].to_dict()["4_simple-s2"] == "unfinished"
    assert len(pd.read_csv(sweep.dir / "report" / "table2.csv")) == 6
    (record,) = list((sweep.dir / "wandb").glob("offline-run-*/run-*.wandb"))
    logged = wandb_record(record)
    assert logged["state"] == "finished" and logged["project"] == "citylens"
    assert logged["name"] == f"report-{sweep.dir.name}"
    assert {"table2", "table2_heatmap", "fig3_tsne_runs", "report_md"} <= set(logged["summary"])
    (run,) = [r["run"] for r in wandb_records(record) if r["type"] == "run"]
    assert run["job_type"] == "report"
    (artifact,) = [
        r["artifact"]
        for r in wandb_records(record)
        if r["type"] == "artifact" and r["artifact"]["type"] == "report"
    ]
    paths = {e["path"] for e in artifact["manifest"]["contents"]}
    assert {"report.md", "table2.csv", "explorer.html"} <= paths
