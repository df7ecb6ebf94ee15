"""ResidualsCallback on hand-made mask stores: AR by hand against finished siblings, mismatches refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from citylens.callbacks.residuals import ResidualsCallback
from citylens.explain.store import StoreError
from citylens.pipeline.residuals_step import COLUMNS, run_residuals


def test_callback_writes_hand_computed_ar_against_finished_siblings(
    default_variant, hand_ar, hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["C"])
    make_run(sweep / "3_vgg11-s0", "vgg11", 0, hand_masks["A"], finished=False)
    current = make_run(sweep / "2_simpler-s0", "simpler", 0, hand_masks["B"], finished=False)
    ResidualsCallback(default_variant, chunk=1).analyse(None, None, current, [])
    table = pd.read_csv(default_variant.dir(current) / "residuals.csv")
    assert list(table.columns) == COLUMNS
    assert table["run_b"].tolist() == ["0_simple-s0", "1_simple-s1"]
    assert (table["run_a"] == "2_simpler-s0").all() and (table["arch_a"] == "simpler").all()
    assert table["arch_b"].tolist() == ["simple", "simple"] and table["seed_b"].tolist() == [0, 1]
    assert (table["n_images"] == 2).all()
    assert table["ar"].tolist() == pytest.approx([hand_ar[("B", "A")], hand_ar[("B", "C")]], rel=1e-5)


def test_single_run_gets_the_header_only(default_variant, hand_masks, make_run, tmp_path: Path):
    run = make_run(tmp_path / "runs" / "x_simple-s0", "simple", 0, hand_masks["A"], finished=False)
    make_run(tmp_path / "runs" / "y_simple-s1", "simple", 1, hand_masks["B"])
    ResidualsCallback(default_variant).analyse(None, None, run, [])
    text = (default_variant.dir(run) / "residuals.csv").read_text()
    assert text.strip() == ",".join(COLUMNS)


def test_mismatched_store_refused_naming_both_runs(
    default_variant, hand_masks, make_run, make_sweep, tmp_path: Path
):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["C"], ids=["pittsburgh/p0", "tokyo/OTHER"])
    current = make_run(sweep / "2_simpler-s0", "simpler", 0, hand_masks["B"], finished=False)
    with pytest.raises(StoreError) as err:
        ResidualsCallback(default_variant).analyse(None, None, current, [])
    message = str(err.value)
    assert "2_simpler-s0" in message and "1_simple-s1" in message and "tokyo/OTHER" in message
    assert not (default_variant.dir(current) / "residuals.csv").exists()
    lenient = run_residuals(current, default_variant, strict=False)
    assert lenient["run_b"].tolist() == ["0_simple-s0"]


def test_run_without_a_store_is_skipped(default_variant, tmp_path: Path):
    ResidualsCallback(default_variant).analyse(None, None, tmp_path, [])
    assert not (default_variant.dir(tmp_path) / "residuals.csv").exists()
