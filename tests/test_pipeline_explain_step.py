"""The explain step on a plain network and a hand-made split: the mask store of the split's images, the
t-SNE table, Figures 3, 4 and 6, what the step reports, the reuse of a store, and which explainers need
label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import citylens.pipeline.explain_step as explain_step
from citylens.app.config import ConfigError, step_options
from citylens.explain.methods import EXPLAINERS, is_attribution
from citylens.explain.store import open_store
from citylens.pipeline import Variant
from citylens.pipeline.explain_step import explainer_label_maps, needs_label_maps
from citylens.pipeline.masks import compute_maps
from citylens.segment import GroundTruthSegmenter

STEP = {"thumbnails": 4, "examples_per_city": 1, "perplexity": 2.0, "batch_size": 5, "pca_dims": 6}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return None


def test_the_step_writes_the_store_the_tsne_table_and_the_figures(split_data, tmp_path: Path, simple_context):
    data = split_data(n=12, size=32)
    context = simple_context(data, tmp_path, run_seed=1)
    result = step_options("explain", **STEP).run(context)
    out = context.out
    store = open_store(out)
    assert store.image_ids == data.ids and store.cities == [r.city for r in data.records]
    maps, probs = compute_maps(context, batch_size=12)
    np.testing.assert_allclose(store.low_res, maps, atol=1e-5)
    np.testing.assert_allclose(store.probs, probs, atol=1e-6)
    tsne = pd.read_csv(out / "tsne.csv")
    assert list(tsne.columns) == ["image_id", "city", "predicted", "probability", "x", "y"]
    assert tsne["image_id"].tolist() == data.ids
    assert tsne["city"].tolist() == [r.city for r in data.records]
    assert tsne["predicted"].tolist() == [data.cities[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(tsne["probability"], probs.max(1), atol=1e-6)
    assert np.isfinite(tsne[["x", "y"]].to_numpy()).all() and tsne[["x", "y"]].std().min() > 0
    figures = {name: out / "figures" / f"{name}.png" for name in ("fig3_tsne", "fig4_explanations")}
    figures["fig6_examples"] = out / "figures" / "fig6_examples.png"
    assert result.figures == figures
    for path in figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    masks = sorted((out / "masks").iterdir())
    assert {p.name for p in masks} == {"low_res.npy", "probs.npy", "targets.npy", "meta.json"}
    assert result.files == [*masks, out / "tsne.csv", *figures.values()]
    assert all(path.is_file() for path in result.files)
    frame, table_store = result.image_table
    assert len(frame) == len(data.records) == len(table_store)
    assert list(result.tables) == ["tsne"] and result.tables["tsne"] is frame
    pd.testing.assert_frame_equal(tsne, frame, check_dtype=False, atol=1e-6)


def test_the_maps_in_the_context_are_stored_without_computing_any(
    split_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simple_context
):
    data = split_data(n=8, size=32)
    maps = np.random.default_rng(0).random((8, 2, 2)).astype(np.float32)
    probs = np.tile(np.array([[0.9, 0.1]], np.float32), (8, 1))
    monkeypatch.setattr(explain_step, "compute_maps", _refuse)
    context = simple_context(data, tmp_path, maps=(maps, probs))
    step_options("explain", **STEP).run(context)
    store = open_store(context.out)
    assert np.array_equal(store.low_res, maps) and np.array_equal(store.probs, probs)
    assert set(pd.read_csv(context.out / "tsne.csv")["predicted"]) == {"pittsburgh"}


def _refuse(*args, **kwargs):
    raise AssertionError("compute_maps called")


def test_a_store_of_the_same_checkpoint_is_kept_another_is_recomputed(
    split_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simple_context
):
    data = split_data(n=8, size=32)
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"one")
    step = step_options("explain", **STEP)
    step.run(simple_context(data, tmp_path / "run", checkpoint=str(checkpoint)))
    first = open_store(simple_context(data, tmp_path / "run").out)
    (tmp_path / "run" / "analysis" / Variant().name / "tsne.csv").unlink()
    with monkeypatch.context() as patch:
        patch.setattr(explain_step, "compute_maps", _refuse)
        step.run(simple_context(data, tmp_path / "run", checkpoint=str(checkpoint)))  # same contents: kept
    assert (first.path.parent / "tsne.csv").is_file()
    checkpoint.write_bytes(b"two")  # retrained: the masks are computed again
    calls = []
    real = explain_step.compute_maps
    monkeypatch.setattr(explain_step, "compute_maps", lambda *a, **k: calls.append(1) or real(*a, **k))
    step.run(simple_context(data, tmp_path / "run", checkpoint=str(checkpoint)))
    assert calls == [1]
    assert open_store(first.path.parent).meta["checkpoint_sha256"] != first.meta["checkpoint_sha256"]


def test_only_object_explainers_need_label_maps():
    for name in EXPLAINERS:
        variant = Variant(name, layer="input" if is_attribution(name) else "last_block")
        assert needs_label_maps(variant) == (name in ("occlusion", "shapley", "shapley_rendered")), name


def test_label_maps_for_the_explainer(split_data, tmp_path: Path, simple_context):
    data = split_data(n=4, size=32)
    assert explainer_label_maps(simple_context(data, tmp_path), 4) is None  # a CAM: no segmenter asked
    occlusion = Variant("occlusion", layer="input")
    with pytest.raises(ValueError, match="explainer occlusion: needs label maps, but no segmenter"):
        explainer_label_maps(simple_context(data, tmp_path, occlusion), 4)
    unlabelled = simple_context(
        data, tmp_path, occlusion, segmenter=GroundTruthSegmenter(32), cache_dir=tmp_path
    )
    with pytest.raises(ValueError, match="explainer occlusion: the test images have no label maps"):
        explainer_label_maps(unlabelled, 4)


@pytest.mark.parametrize("key", ["batch_size", "tsne_side", "pca_dims"])
def test_sizes_below_one_are_refused_by_key(key: str):
    with pytest.raises((ValueError, ConfigError), match=f"analysis.steps.explain.{key}: must be >= 1, got 0"):
        step_options("explain", **{key: 0})
