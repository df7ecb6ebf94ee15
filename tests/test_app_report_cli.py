"""citylens-report: W&B logging of the report, folders that are not sweeps refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from citylens.app import report_cli as cli
from citylens.core.errors import ConfigError
from citylens.report.sweep import Options, build_report

FAST = Options(n_boot=200, n_perm=1000, examples_per_city=1)


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
