"""ResidualsCallback on hand-made mask stores: AR by hand, one pass for all pairs, mismatches refused."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citylens.analysis.residuals import residuals
from citylens.callbacks.residuals import COLUMNS, ResidualsCallback, run_residuals
from citylens.explain.store import MaskStore, StoreError, check_same_images, open_store
from citylens.report.runs import stream_residuals


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


def test_all_pairs_streaming_equals_pairwise(
    default_variant, make_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rng = np.random.default_rng(0)
    ids = [f"tokyo/{i}" for i in range(7)]
    stores = [
        open_store(
            default_variant.dir(
                make_run(tmp_path / f"r{k}", "simple", k, rng.random((7, 3, 3), np.float32), ids, size=16)
            )
        )
        for k in range(4)
    ]
    reads = []
    original = MaskStore.masks
    monkeypatch.setattr(
        MaskStore, "masks", lambda self, *a, **kw: reads.append(self.path) or original(self, *a, **kw)
    )
    streamed = stream_residuals(stores, ["r0", "r1", "r2", "r3"], chunk=3)
    assert len(reads) == 4 * 3 and all(reads.count(s.path) == 3 for s in stores)
    monkeypatch.undo()
    per_image = streamed.per_image()
    for (i, a), (j, b) in combinations(enumerate(stores), 2):
        expected = residuals(a.masks(), b.masks())
        np.testing.assert_allclose(per_image[(f"r{i}", f"r{j}")], expected, rtol=1e-6)
        assert streamed.average()[(f"r{i}", f"r{j}")] == pytest.approx(expected.mean(), rel=1e-6)


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


def test_different_analysis_views_refused(default_variant, hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    other = make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"], size=8)
    current = make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["B"], finished=False)
    with pytest.raises(StoreError, match=r"different analysis views \(input_size: 4 vs 8 px\)"):
        check_same_images([open_store(current), open_store(other)])
    assert run_residuals(
        current, default_variant
    ).empty  # another view size is another data group: not compared


def test_stores_differing_only_in_fingerprint_are_refused_naming_the_field(
    hand_masks, make_run, tmp_path: Path
):
    a = open_store(make_run(tmp_path / "a", "simple", 0, hand_masks["A"], fingerprint="f00d"))
    b = open_store(make_run(tmp_path / "b", "simple", 1, hand_masks["A"], fingerprint="beef"))
    with pytest.raises(StoreError, match="different data; dataset_fingerprint: 'f00d' vs 'beef'"):
        check_same_images([a, b])
    b.meta.update(dataset_fingerprint="f00d", split_seed=1)
    with pytest.raises(StoreError, match="split_seed: 0 vs 1"):
        check_same_images([a, b])


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


def test_run_without_a_store_is_skipped(default_variant, tmp_path: Path):
    ResidualsCallback(default_variant).analyse(None, None, tmp_path, [])
    assert not (default_variant.dir(tmp_path) / "residuals.csv").exists()
