"""ResidualsCallback on hand-made mask stores: AR by hand, one pass for all pairs, mismatches refused."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citylens.analysis.residuals import residuals
from citylens.callbacks.residuals import COLUMNS, ResidualsCallback, run_residuals
from citylens.explain.store import MaskStore, StoreError, check_same_images, open_store, write_store
from citylens.pipeline import Variant
from citylens.report.runs import stream_residuals
from citylens.run_state import write_complete

DEFAULT = Variant()

IDS = ["pittsburgh/p0", "tokyo/t0"]
CHECKER = (np.indices((4, 4)).sum(axis=0) % 2).astype(np.float32)
TOP = np.zeros((4, 4), np.float32)
TOP[:2] = 1
ALL_BUT_CORNER = np.ones((4, 4), np.float32)
ALL_BUT_CORNER[0, 0] = 0
# Every mask holds 0 and 1, so the store's min-max normalisation keeps it (up to a factor 1/(1+1e-7)).
MASKS = {
    "A": np.stack([CHECKER, TOP]),
    "B": np.stack([ALL_BUT_CORNER, 1 - TOP]),
    "C": np.stack([1 - CHECKER, TOP]),
}
# By hand: A vs B, image 0 differs where the checker is 0 except the corner (7 of 16 px), image 1 everywhere.
EXPECTED = {("B", "A"): (7 / 16 + 1) / 2, ("B", "C"): (9 / 16 + 1) / 2, ("A", "C"): (1 + 0) / 2}


def make_run(
    run_dir: Path,
    arch: str,
    seed: int,
    low_res: np.ndarray,
    ids: list[str] = IDS,
    finished: bool = True,
    size: int | None = None,
    variant: Variant = DEFAULT,
    fingerprint: str = "hand",
    places: list[str] | None = None,
    dataset: dict | None = None,
) -> Path:
    """A fake run dir: a mask store (full-size maps when `size` is None) and, if finished, metrics.json and
    the completion record. `dataset` is the store's dataset description (e.g. with the planted objects)."""
    n = len(low_res)
    cities = [i.split("/")[0] for i in ids]
    targets = np.array([0 if c == "pittsburgh" else 1 for c in cities])
    probs = np.eye(2, dtype=np.float32)[targets] * 0.8 + 0.1
    provenance = {
        "arch": arch,
        "seed": seed,
        "input_size": size or low_res.shape[-1],
        "dataset_fingerprint": fingerprint,
        "split_seed": 0,
        "split_settings": {"fractions": [0.6, 0.2, 0.2], "by": "place", "balance": False, "balance_seed": 0},
        "city_names": ["pittsburgh", "tokyo"],
        "dataset": dataset or {"kind": "hand-made"},
    }
    provenance.update(variant.to_dict())
    write_store(
        variant.dir(run_dir) / "masks", low_res, probs[:n], targets[:n], ids, cities, provenance, places
    )
    if finished:
        metrics = {"arch": arch, "seed": seed, "test/acc": 1.0, "cities": ["pittsburgh", "tokyo"]}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        write_complete(run_dir, {"written_by": "tests"})
    return run_dir


def make_sweep(root: Path) -> Path:
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_callback_writes_hand_computed_ar_against_finished_siblings(tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, MASKS["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, MASKS["C"])
    make_run(sweep / "3_vgg11-s0", "vgg11", 0, MASKS["A"], finished=False)
    current = make_run(sweep / "2_simpler-s0", "simpler", 0, MASKS["B"], finished=False)
    ResidualsCallback(DEFAULT, chunk=1).analyse(None, None, current, [])
    table = pd.read_csv(DEFAULT.dir(current) / "residuals.csv")
    assert list(table.columns) == COLUMNS
    assert table["run_b"].tolist() == ["0_simple-s0", "1_simple-s1"]
    assert (table["run_a"] == "2_simpler-s0").all() and (table["arch_a"] == "simpler").all()
    assert table["arch_b"].tolist() == ["simple", "simple"] and table["seed_b"].tolist() == [0, 1]
    assert (table["n_images"] == 2).all()
    assert table["ar"].tolist() == pytest.approx([EXPECTED[("B", "A")], EXPECTED[("B", "C")]], rel=1e-5)


def test_single_run_gets_the_header_only(tmp_path: Path):
    run = make_run(tmp_path / "runs" / "x_simple-s0", "simple", 0, MASKS["A"], finished=False)
    make_run(tmp_path / "runs" / "y_simple-s1", "simple", 1, MASKS["B"])
    ResidualsCallback(DEFAULT).analyse(None, None, run, [])
    text = (DEFAULT.dir(run) / "residuals.csv").read_text()
    assert text.strip() == ",".join(COLUMNS)


def test_all_pairs_streaming_equals_pairwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    ids = [f"tokyo/{i}" for i in range(7)]
    stores = [
        open_store(
            DEFAULT.dir(
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


def test_mismatched_store_refused_naming_both_runs(tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, MASKS["A"])
    make_run(sweep / "1_simple-s1", "simple", 1, MASKS["C"], ids=["pittsburgh/p0", "tokyo/OTHER"])
    current = make_run(sweep / "2_simpler-s0", "simpler", 0, MASKS["B"], finished=False)
    with pytest.raises(StoreError) as err:
        ResidualsCallback(DEFAULT).analyse(None, None, current, [])
    message = str(err.value)
    assert "2_simpler-s0" in message and "1_simple-s1" in message and "tokyo/OTHER" in message
    assert not (DEFAULT.dir(current) / "residuals.csv").exists()
    lenient = run_residuals(current, DEFAULT, strict=False)
    assert lenient["run_b"].tolist() == ["0_simple-s0"]


def test_different_analysis_views_refused(tmp_path: Path):
    sweep = make_sweep(tmp_path)
    other = make_run(sweep / "0_simple-s0", "simple", 0, MASKS["A"], size=8)
    current = make_run(sweep / "1_simple-s1", "simple", 1, MASKS["B"], finished=False)
    with pytest.raises(StoreError, match=r"different analysis views \(input_size: 4 vs 8 px\)"):
        check_same_images([open_store(current), open_store(other)])
    assert run_residuals(current, DEFAULT).empty  # another view size is another data group: not compared


def test_stores_differing_only_in_fingerprint_are_refused_naming_the_field(tmp_path: Path):
    a = open_store(make_run(tmp_path / "a", "simple", 0, MASKS["A"], fingerprint="f00d"))
    b = open_store(make_run(tmp_path / "b", "simple", 1, MASKS["A"], fingerprint="beef"))
    with pytest.raises(StoreError, match="different data; dataset_fingerprint: 'f00d' vs 'beef'"):
        check_same_images([a, b])
    b.meta.update(dataset_fingerprint="f00d", split_seed=1)
    with pytest.raises(StoreError, match="split_seed: 0 vs 1"):
        check_same_images([a, b])


def test_residuals_only_within_the_same_data(tmp_path: Path):
    """A sweep over data.seed: the same image ids, other pictures (fingerprint): no residual across data."""
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, MASKS["A"], fingerprint="data-seed-0")
    make_run(sweep / "1_simple-s0", "simple", 0, MASKS["C"], fingerprint="data-seed-1")
    make_run(sweep / "2_vgg11-s0", "vgg11", 0, MASKS["B"], fingerprint="data-seed-0")
    current = make_run(
        sweep / "3_vgg11-s0", "vgg11", 0, MASKS["B"], fingerprint="data-seed-1", finished=False
    )
    table = run_residuals(current, DEFAULT)
    assert table["run_b"].tolist() == ["1_simple-s0"]
    assert table["ar"].tolist() == pytest.approx([EXPECTED[("B", "C")]], rel=1e-5)


def test_run_without_a_store_is_skipped(tmp_path: Path):
    ResidualsCallback(DEFAULT).analyse(None, None, tmp_path, [])
    assert not (DEFAULT.dir(tmp_path) / "residuals.csv").exists()
