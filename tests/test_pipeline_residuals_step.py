"""run_residuals: a run's AR against its finished siblings, within its data group only."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylens.pipeline.residuals_step import run_residuals


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
    table = run_residuals(current, default_variant)
    assert table["run_b"].tolist() == ["1_simple-s0"]
    assert table["ar"].tolist() == pytest.approx([hand_ar[("B", "C")]], rel=1e-5)
