"""The mask store: errors, and stores of other images, views or data refused naming the runs and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from citylens.explain.store import FORMAT_VERSION, StoreError, check_same_images, open_store, write_store
from citylens.pipeline.residuals_step import run_residuals


def test_different_analysis_views_refused(default_variant, hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    other = make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"], size=8)
    current = make_run(sweep / "1_simple-s1", "simple", 1, hand_masks["B"], finished=False)
    with pytest.raises(StoreError, match=r"different analysis views \(input_size: 4 vs 8 px\)"):
        check_same_images([open_store(current), open_store(other)])
    # another view size is another data group: not compared
    assert run_residuals(current, default_variant, None, 128, True).empty


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


def _fake_store(path: Path, ids: list[str], arch: str = "simple") -> Path:
    n = len(ids)
    write_store(
        path / "masks",
        np.random.rand(n, 2, 2).astype(np.float32),
        np.full((n, 2), 0.5),
        np.zeros(n),
        ids,
        ["a"] * n,
        {"arch": arch, "seed": 0, "input_size": 8},
    )
    return path


def test_store_errors_are_clear(tmp_path: Path):
    with pytest.raises(StoreError, match="no mask store"):
        open_store(tmp_path)
    run = _fake_store(tmp_path / "r1", ["a/1.jpg", "a/2.jpg"])
    assert open_store(run).masks().shape == (2, 8, 8)
    meta = json.loads((run / "masks" / "meta.json").read_text())
    (run / "masks" / "meta.json").write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(StoreError, match="format"):
        open_store(run)
    broken = _fake_store(tmp_path / "r2", ["a/1.jpg"])
    (broken / "masks" / "probs.npy").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        open_store(broken)


def test_mismatched_stores_are_refused_naming_both_runs(tmp_path: Path):
    a = open_store(_fake_store(tmp_path / "run_a", ["a/1.jpg", "a/2.jpg", "a/3.jpg"]))
    b = open_store(_fake_store(tmp_path / "run_b", ["a/1.jpg", "a/9.jpg", "a/3.jpg"], arch="vgg11"))
    check_same_images([a, open_store(shutil.copytree(tmp_path / "run_a", tmp_path / "run_c"))])
    with pytest.raises(StoreError, match=r"run_a.*run_b.*image 1: a/2.jpg vs a/9.jpg"):
        check_same_images([a, b])
