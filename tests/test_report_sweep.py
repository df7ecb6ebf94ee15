"""The sweep report: Table 2 grouping and readings on hand-made runs, and a report from one small real sweep.

The real sweep (2 architectures x 2 seeds, smoke settings) runs once per module as a subprocess; its report is
built by the Hydra callback at multirun end, then rebuilt on demand with `citylens-report`.
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

from citylens.callbacks.sweep_report import SweepReportCallback
from citylens.errors import ConfigError
from citylens.pipeline import Variant
from citylens.report import cli
from citylens.report.sweep import Options, build_report
from citylens.run_state import write_failed

FAST = Options(n_boot=200, n_perm=1000, examples_per_city=1)


def test_table2_grouping_and_readings_on_hand_made_runs(
    hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simpler-s0", "simpler", 0, hand_masks["B"])
    make_run(sweep / "2_simple-s1", "simple", 1, hand_masks["C"])
    make_run(sweep / "3_simpler-s1", "simpler", 1, hand_masks["B"], finished=False)
    out = build_report(sweep, FAST)
    pairs = pd.read_csv(out / "table2.csv")
    assert list(zip(pairs["label_a"], pairs["label_b"])) == [
        ("simple-s0", "simple-s1"),
        ("simple-s0", "simpler-s0"),
        ("simple-s1", "simpler-s0"),
    ]
    assert pairs["group"].tolist() == ["seed", "architecture", "architecture"]
    expected = [hand_ar[("A", "C")], hand_ar[("B", "A")], hand_ar[("B", "C")]]
    assert pairs["ar"].tolist() == pytest.approx(expected, rel=1e-5)
    assert ((pairs["ci_low"] <= pairs["ar"] + 1e-9) & (pairs["ar"] <= pairs["ci_high"] + 1e-9)).all()
    grouped = pd.read_csv(out / "table2_grouped.csv")
    assert grouped["pair"].tolist() == ["simple vs simpler", "simple vs simple retrained"]
    assert grouped["n_pairs"].tolist() == [2, 1]
    assert grouped["ar"].tolist() == pytest.approx([0.75, 0.5], rel=1e-5)
    assert grouped["paper_ar"].tolist() == [0.3149, 0.2411]
    text = (out / "report.md").read_text()
    assert "3_simpler-s1`: unfinished: no complete.json" in text
    assert "mean AR 0.750 vs 0.500" in text and "Most alike: simple-s0 vs simple-s1 (AR 0.500)" in text
    assert "masks are drawn alone" in text and "No run has a t-SNE map" in text
    assert text.count("**Reading:**") == 9
    assert "0 of 6 test images (summed over runs) are misclassified" in text
    assert "95% interval over test places, for these trained networks" in text
    for name in ("table2_heatmap.png", "fig6_examples_runs.png", "runs.csv", "statistics.csv"):
        assert (out / name).is_file()
    tests = pd.read_csv(out / "statistics.csv")
    assert {"test", "n_relabellings", "p_value", "p_adjusted", "primary"} <= set(tests.columns)
    # 3 runs, simple x 2 + simpler: 3 distinct relabellings; the observed one is the most extreme
    ar = tests.iloc[0]
    assert ar["primary"] and ar["n_relabellings"] == 3 and ar["p_value"] == pytest.approx(1 / 3)
    assert ar["test"] == "runs relabelled, every relabelling" and not tests["primary"].iloc[1:].any()


def test_sweep_over_a_data_setting_compares_within_data_groups(
    hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    """data.seed=0,1: the same image ids, other pictures; runs are compared only within each data's group."""
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"], fingerprint="data-0")
    make_run(sweep / "1_simple-s0", "simple", 0, hand_masks["B"], fingerprint="data-1")
    make_run(sweep / "2_simple-s1", "simple", 1, hand_masks["C"], fingerprint="data-0")
    make_run(sweep / "3_simple-s1", "simple", 1, hand_masks["A"], fingerprint="data-1")
    out = build_report(sweep, FAST)
    pairs = pd.read_csv(out / "table2.csv")
    assert sorted(zip(pairs["data_group"], pairs["run_a"], pairs["run_b"])) == [
        (1, "0_simple-s0", "2_simple-s1"),
        (2, "1_simple-s0", "3_simple-s1"),
    ]
    assert pairs["ar"].tolist() == pytest.approx([hand_ar[("A", "C")], hand_ar[("B", "A")]], rel=1e-5)
    text = (out / "report.md").read_text()
    assert "form 2 data groups" in text
    assert "data group 2 (dataset_fingerprint 'data-0' vs 'data-1' against group 1)" in text
    assert "## Table 2: average residual between runs (data group 2)" in text
    assert (out / "table2_heatmap_g1.png").is_file() and (out / "fig6_examples_runs_g2.png").is_file()
    assert pd.read_csv(out / "runs.csv")["data_group"].tolist() == [1, 1, 2, 2]


def test_two_variants_of_every_run_are_listed_side_by_side(
    default_variant, hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    other = Variant(threshold=0.3, target="prediction")
    for name, arch, seed, masks in (("0_simple-s0", "simple", 0, "A"), ("1_simple-s1", "simple", 1, "C")):
        make_run(sweep / name, arch, seed, hand_masks[masks])
        make_run(sweep / name, arch, seed, hand_masks["B" if seed else "A"], variant=other)
    out = build_report(sweep, FAST)
    table = pd.read_csv(out / "variants.csv").set_index("variant")
    assert sorted(table.index) == sorted([default_variant.name, other.name])
    assert table.loc[default_variant.name, "ar_seeds"] == pytest.approx(hand_ar[("A", "C")], rel=1e-5)
    assert table.loc[other.name, "ar_seeds"] == pytest.approx(hand_ar[("B", "A")], rel=1e-5)
    assert table.loc[other.name, "target"] == "prediction" and table.loc[other.name, "threshold"] == 0.3
    text = (out / "report.md").read_text()
    assert "2 analysis variants" in text
    assert "## One image, every explainer" in text and "fig_explainers.png" in text
    with Image.open(out / "fig_explainers.png") as grid:
        assert grid.width > 300 and grid.height > 200


def test_one_run_and_no_seed_pairs_say_what_is_missing(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    text = (build_report(sweep, FAST) / "report.md").read_text()
    assert "Table 2 needs two finished runs of the same data; this sweep has 1" in text
    make_run(sweep / "1_vgg11-s0", "vgg11", 0, hand_masks["B"])
    out = build_report(sweep, FAST)
    text = (out / "report.md").read_text()
    assert "needs two seeds of one architecture" in text
    assert pd.read_csv(out / "statistics.csv")["p_value"].isna().all()


def test_wandb_report_run_is_in_the_sweeps_group(
    hand_masks, make_run, make_sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import wandb

    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["C"])
    calls = {}

    class FakeRun(SimpleNamespace):
        def log(self, payload: dict) -> None:
            calls["logged"] = payload

        def log_artifact(self, artifact: object) -> None:
            calls["artifact"] = artifact

        def finish(self) -> None:
            calls["finished"] = True

    def fake_init(**kwargs: object) -> FakeRun:
        calls["init"] = kwargs
        return FakeRun(summary={}, dir=str(tmp_path))

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cli.report(sweep, wandb=True, options=FAST)
    assert calls["init"]["job_type"] == "report" and calls["init"]["group"] == "sweep"
    assert calls["init"]["project"] == "citylens" and calls["init"]["mode"] == "offline"
    assert {"table2", "table2_heatmap", "fig6_examples_runs", "statistics"} <= set(calls["logged"])
    assert calls["artifact"].type == "report" and calls["artifact"].name == "report-sweep"
    assert {"report.md", "table2.csv", "explorer.html"} <= set(calls["artifact"].manifest.entries)
    assert calls["finished"]


def test_hydra_callback_logs_a_failing_report_without_raising(
    hand_masks, make_run, make_sweep, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}})
    SweepReportCallback().on_multirun_end(config)
    assert "sweep report for" in caplog.text and "citylens-report" in caplog.text
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    SweepReportCallback(wandb=False, n_boot=50, n_perm=100).on_multirun_end(
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
        SweepReportCallback(wandb=False, n_boot=50, n_perm=100).on_multirun_end(
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


def test_citylens_report_refuses_a_folder_that_is_not_a_sweep(hand_masks, make_run, tmp_path: Path):
    run = make_run(tmp_path / "runs" / "x", "simple", 0, hand_masks["A"])
    for folder in (run, tmp_path / "runs", tmp_path / "empty"):
        folder.mkdir(exist_ok=True)
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(folder)])
        assert exit_info.value.code == 2
        assert not (folder / "report").exists()
    with pytest.raises(ConfigError, match="not a sweep folder"):
        build_report(run, FAST)


def test_symlinked_run_leaving_the_sweep_is_refused(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    outside = make_run(tmp_path / "elsewhere" / "1_simpler-s0", "simpler", 0, hand_masks["B"])
    (sweep / "1_simpler-s0").symlink_to(outside, target_is_directory=True)
    out = build_report(sweep, FAST)
    runs = pd.read_csv(out / "runs.csv").set_index("run")
    assert runs["status"].to_dict() == {"0_simple-s0": "finished", "1_simpler-s0": "refused"}
    assert "symlink leaving the sweep" in runs.loc["1_simpler-s0", "reason"]


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
