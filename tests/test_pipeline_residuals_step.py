"""The residuals step on hand-made mask stores: AR by hand against finished siblings, within one data group
only, mismatches refused (or skipped when not strict), nothing written without a store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from torch import nn

from citylens.app.config import ConfigError, step_options
from citylens.explain.store import StoreError
from citylens.pipeline.context import Context
from citylens.pipeline.residuals_step import COLUMNS, run_residuals


def run_step(run_dir: Path, variant, data, **changes) -> None:
    step_options("residuals", **changes).run(Context(nn.Identity(), "simple", data, run_dir, variant))


def test_writes_hand_computed_ar_against_finished_siblings(
    default_variant, hand_ar, hand_masks, make_run, make_sweep, split_data, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["C"])
    make_run(sweep / "3_vgg11-s0", "vgg11", 0, hand_masks["A"], finished=False)
    current = make_run(sweep / "2_simpler-s0", "simpler", 0, hand_masks["B"], finished=False)
    run_step(current, default_variant, split_data(), chunk=1)
    table = pd.read_csv(default_variant.dir(current) / "residuals.csv")
    assert list(table.columns) == COLUMNS
    assert table["run_b"].tolist() == ["0_simple-s0", "1_simple-s1"]
    assert (table["run_a"] == "2_simpler-s0").all() and (table["arch_a"] == "simpler").all()
    assert table["arch_b"].tolist() == ["simple", "simple"] and table["seed_b"].tolist() == [0, 1]
    assert (table["n_images"] == 2).all()
    assert table["ar"].tolist() == pytest.approx([hand_ar[("B", "A")], hand_ar[("B", "C")]], rel=1e-5)


def test_residuals_only_within_the_same_data(
    default_variant, hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    """A sweep over data.seed: the same image ids, other pictures (fingerprint): no residual across data."""
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"], fingerprint="data-seed-0")
    make_run(sweep / "1_simple-s0", "simple", 0, hand_masks["C"], fingerprint="data-seed-1")
    make_run(sweep / "2_vgg11-s0", "vgg11", 0, hand_masks["B"], fingerprint="data-seed-0")
    current = make_run(
        sweep / "3_vgg11-s0", "vgg11", 0, hand_masks["B"], fingerprint="data-seed-1", finished=False
    )
    table = run_residuals(current, default_variant, None, 128, True)
    assert table["run_b"].tolist() == ["1_simple-s0"]
    assert table["ar"].tolist() == pytest.approx([hand_ar[("B", "C")]], rel=1e-5)


def test_single_run_gets_the_header_only(default_variant, hand_masks, make_run, split_data, tmp_path: Path):
    run = make_run(tmp_path / "runs" / "x_simple-s0", "simple", 0, hand_masks["A"], finished=False)
    make_run(tmp_path / "runs" / "y_simple-s1", "simple", 1, hand_masks["B"])
    run_step(run, default_variant, split_data())
    text = (default_variant.dir(run) / "residuals.csv").read_text()
    assert text.strip() == ",".join(COLUMNS)


def test_mismatched_store_refused_naming_both_runs(
    default_variant, hand_masks, make_run, make_sweep, split_data, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["C"], ids=["pittsburgh/p0", "tokyo/OTHER"])
    current = make_run(sweep / "2_simpler-s0", "simpler", 0, hand_masks["B"], finished=False)
    with pytest.raises(StoreError) as err:
        run_step(current, default_variant, split_data())
    message = str(err.value)
    assert "2_simpler-s0" in message and "1_simple-s1" in message and "tokyo/OTHER" in message
    assert not (default_variant.dir(current) / "residuals.csv").exists()
    run_step(current, default_variant, split_data(), strict=False)
    lenient = pd.read_csv(default_variant.dir(current) / "residuals.csv")
    assert lenient["run_b"].tolist() == ["0_simple-s0"]


def test_run_without_a_store_is_skipped(default_variant, split_data, tmp_path: Path, caplog):
    context = Context(nn.Identity(), "simple", split_data(), tmp_path, default_variant)
    result = step_options("residuals").run(context)
    assert result.files == [] and result.tables == {}
    assert "residuals skipped" in caplog.text and "has no mask store" in caplog.text
    assert not (default_variant.dir(tmp_path) / "residuals.csv").exists()


def test_chunk_is_checked_naming_the_key():
    with pytest.raises(ConfigError, match="analysis.steps.residuals.chunk: must be >= 1, got 0"):
        step_options("residuals", chunk=0)
