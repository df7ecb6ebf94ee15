"""Masks of a run's test split: the balanced sample, each rank's share, the maps of a variant's explainer on
the split's images, the variant's store with its provenance, and the empty scenes of integrated gradients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from citylens.core.ade20k import class_index
from citylens.core.io import sha256
from citylens.core.layers import LAYER_PRESETS
from citylens.core.view import to_input
from citylens.data.datamodule import SyntheticCityData
from citylens.data.synthetic import SyntheticCities
from citylens.data.synthetic.counterfactuals import as_view
from citylens.explain.methods import GradCAM, build_explainer
from citylens.explain.store import open_store
from citylens.pipeline import Variant
from citylens.pipeline.masks import (
    balanced_sample,
    compute_maps,
    empty_scene_inputs,
    reusable_store,
    sample_indices,
    shard_bounds,
    store_provenance,
    write_variant_store,
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return None


def _inputs(data, indices) -> torch.Tensor:
    return to_input(torch.from_numpy(data.views(list(indices))).permute(0, 3, 1, 2))


def _as_input(rgb: np.ndarray) -> torch.Tensor:
    """A rendered image as the network input of its 32 px analysis view."""
    return to_input(torch.from_numpy(np.array(as_view(rgb, 32)[None])).permute(0, 3, 1, 2))


# ---------------------------------------------------------------- the sample and the shares


def test_sample_is_balanced_within_each_city_and_fixed_by_the_seed():
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 0, 2, 1, 0])
    idx = sample_indices(targets, 2, seed=0)
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert np.bincount(targets[idx]).tolist() == [2, 2, 2]
    assert np.array_equal(idx, sample_indices(targets, 2, seed=0))
    seeds = {tuple(sample_indices(targets, 2, seed=s)) for s in range(10)}
    assert len(seeds) > 1  # the seed chooses
    # A city with fewer images than asked gives all of them.
    few = sample_indices(targets, 4, seed=3)
    assert np.bincount(targets[few]).tolist() == [4, 4, 3]
    assert set(few[targets[few] == 2]) == {2, 5, 10}
    assert sample_indices(np.zeros(0, np.int64), 3).shape == (0,)


@pytest.mark.parametrize("n", [0, 1, 7, 64, 100, 130, 257])
@pytest.mark.parametrize("batch_size", [1, 4, 64])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_cover_the_images_once_in_whole_batches(n: int, batch_size: int, world_size: int):
    bounds = [shard_bounds(n, batch_size, rank, world_size) for rank in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (_, stop), (next_start, _) in zip(bounds, bounds[1:]):
        assert stop == next_start  # contiguous, no overlap, no gap
    nonempty = [(a, b) for a, b in bounds if b > a]
    assert sum(b - a for a, b in bounds) == n
    for a, _ in nonempty:
        assert a % batch_size == 0  # each share starts where a single process' batch starts
    for a, b in nonempty[:-1]:
        assert (b - a) % batch_size == 0
    assert all(0 <= a <= b <= n for a, b in bounds)
    if world_size == 1:
        assert bounds == [(0, n)]


def test_shards_are_as_even_as_whole_batches_allow():
    assert [shard_bounds(10, 2, r, 2) for r in range(2)] == [(0, 6), (6, 10)]
    assert [shard_bounds(10, 4, r, 3) for r in range(3)] == [(0, 4), (4, 8), (8, 10)]
    assert [shard_bounds(3, 4, r, 2) for r in range(2)] == [(0, 3), (3, 3)]


# ---------------------------------------------------------------- maps


def test_maps_are_gradcam_of_the_true_cities_on_the_split_rows(split_data, tmp_path: Path, simple_context):
    data = split_data(n=12, size=32)
    context = simple_context(data, tmp_path)
    maps, probs = compute_maps(context, batch_size=4, start=2, stop=10)
    cam = GradCAM(context.network, "last_block")
    x = _inputs(data, range(2, 10))  # rows run backwards in the split view: a lookup by position differs
    expected, logits = cam.low_res(x, data.targets()[2:10])
    assert maps.shape == tuple(expected.shape) and maps.dtype == np.float32 and probs.dtype == np.float32
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs, logits.softmax(1).numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    wrong_rows, _ = cam.low_res(to_input(torch.from_numpy(data.images[2:10]).permute(0, 3, 1, 2)))
    assert not np.allclose(maps, wrong_rows.numpy(), atol=1e-3)


def test_prediction_target_explains_the_argmax(split_data, tmp_path: Path, simple_context):
    data = split_data(n=12, size=32)
    by_label, _ = compute_maps(simple_context(data, tmp_path), batch_size=5)
    context = simple_context(data, tmp_path, Variant(target="prediction"))
    by_prediction, probs = compute_maps(context, batch_size=5)
    expected, _ = GradCAM(context.network, "last_block").low_res(_inputs(data, range(12)))
    np.testing.assert_allclose(by_prediction, expected.numpy(), atol=1e-5)
    agree = probs.argmax(1) == data.targets()
    assert agree.any() and not agree.all()  # the two targets differ on some images, not on others
    np.testing.assert_allclose(by_label[agree], by_prediction[agree], atol=1e-5)
    assert not np.allclose(by_label[~agree], by_prediction[~agree], atol=1e-3)


def test_batches_do_not_change_the_maps_and_an_empty_range_is_empty(
    split_data, tmp_path: Path, simple_context
):
    data = split_data(n=12, size=32)
    context = simple_context(data, tmp_path)
    whole, whole_probs = compute_maps(context, batch_size=12)
    in_threes, probs = compute_maps(context, batch_size=3)
    np.testing.assert_allclose(in_threes, whole, atol=1e-5)
    np.testing.assert_allclose(probs, whole_probs, atol=1e-6)
    rest, _ = compute_maps(context, batch_size=4, start=8)
    np.testing.assert_allclose(rest, whole[8:], atol=1e-5)
    maps, probs = compute_maps(context, batch_size=4, start=5, stop=5)
    assert maps.shape == (0, 0, 0) and probs.shape == (0, 2)


def test_an_object_explainer_reads_the_label_maps_of_its_images(split_data, tmp_path: Path, simple_context):
    data = split_data(n=8, size=32)
    variant = Variant("occlusion", layer="input")
    context = simple_context(data, tmp_path, variant)
    with pytest.raises(ValueError, match="explainer occlusion: needs the test images' label maps"):
        compute_maps(context, batch_size=4)
    labels = np.zeros((8, 32, 32), np.uint8)
    for i in range(8):
        labels[i, : 3 * (i + 1)] = 2  # a band of class 2 whose height names the image
    maps, _ = compute_maps(context, batch_size=2, start=4, stop=8, labels=labels)
    explainer = build_explainer("occlusion", context.network, "input")
    x = _inputs(data, range(4, 8))
    expected, _ = explainer.low_res(x, data.targets()[4:8], labels=torch.from_numpy(labels[4:8]))
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-5)
    for k, i in enumerate(range(4, 8)):  # one value per object: the band of image i, indexed like the split
        band = labels[i] == 2
        assert np.ptp(maps[k][band]) < 1e-6 and np.ptp(maps[k][~band]) < 1e-6


# ---------------------------------------------------------------- the store and its provenance


def test_store_round_trip_with_provenance(split_data, tmp_path: Path, simple_context):
    data = split_data(n=12, size=32)
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"weights")
    context = simple_context(data, tmp_path / "run", run_seed=3, checkpoint=str(checkpoint))
    maps = compute_maps(context, batch_size=6)
    provenance = store_provenance(context)
    assert provenance["checkpoint_sha256"] == sha256(checkpoint)
    assert provenance["target_layer"] == LAYER_PRESETS["simple"]["last_block"]
    store = write_variant_store(context, maps, provenance)
    reopened = open_store(context.out)
    assert store.path == reopened.path == context.out / "masks"
    assert reopened.image_ids == data.ids
    assert reopened.cities == [r.city for r in data.records]
    assert reopened.places == [r.place for r in data.records]
    assert np.array_equal(reopened.targets, data.targets())
    assert np.array_equal(reopened.low_res, maps[0]) and np.array_equal(reopened.probs, maps[1])
    meta = reopened.meta
    assert meta["arch"] == "simple" and meta["seed"] == 3 and meta["checkpoint"] == str(checkpoint)
    assert meta["variant"] == Variant().name and meta["explainer"] == "gradcam" and meta["target"] == "label"
    assert meta["input_size"] == 32 and reopened.size == 32
    assert meta["dataset_fingerprint"] == "hand-made" and meta["split_seed"] == 0
    assert meta["city_names"] == ["pittsburgh", "tokyo"] and meta["dataset"] == data.describe()
    # Kept when provenance and images are the same; not for other images, another checkpoint, or none.
    assert reusable_store(context.out, provenance, data.ids).image_ids == data.ids
    assert reusable_store(context.out, provenance, data.ids[::-1]) is None
    assert reusable_store(context.out, {**provenance, "checkpoint_sha256": "0" * 64}, data.ids) is None
    assert reusable_store(context.out, {**provenance, "checkpoint_sha256": None}, data.ids) is None
    assert reusable_store(context.out, {**provenance, "checkpoint": "/moved/best.ckpt"}, data.ids) is not None
    assert reusable_store(tmp_path / "elsewhere", provenance, data.ids) is None


# ---------------------------------------------------------------- empty scenes


def test_empty_scenes_need_synthetic_data(split_data):
    data = dataclasses.replace(split_data(n=4, size=32), facts={"kind": "folder"})
    with pytest.raises(ValueError, match="baseline: 'empty' needs synthetic data"):
        empty_scene_inputs(data, 0, 2)


def test_empty_scenes_are_the_images_rendered_without_their_objects(
    cache_dir: Path, tmp_path: Path, simple_context
):
    cities = {"a": {"planted": {"signboard": 1.0}}, "b": {"planted": {"fence": 1.0}}}
    dm = SyntheticCityData(
        cities, images_per_city=10, image_size=32, input_size=32, cache_dir=str(cache_dir), hflip=False
    )
    dm.setup()
    test = dm.split_view("test")
    scenes = SyntheticCities(dm.root)
    n = len(test.records)
    assert n >= 3
    empty = empty_scene_inputs(test, 1, n - 1)
    assert empty.shape == (n - 1, 3, 32, 32) and empty.dtype == torch.float32
    for k, record in enumerate(test.records[1:]):
        present, _ = scenes.contents(record.image_id)
        assert present  # every image holds its city's planted object
        rgb, labels = scenes.render(record.image_id, remove=present)
        assert not np.isin(labels, [class_index(name) for name in present]).any()
        torch.testing.assert_close(empty[k : k + 1], _as_input(rgb))
        full = _as_input(scenes.render(record.image_id)[0])
        assert not torch.equal(empty[k : k + 1], full)  # something was removed
    # Integrated gradients from the empty scenes: compute_maps passes them as its baselines.
    variant = Variant("ig", layer="input", options={"baseline": "empty", "n_steps": 4})
    context = simple_context(test, tmp_path, variant)
    maps, _ = compute_maps(context, batch_size=2, start=1, stop=n)
    explainer = build_explainer("ig", context.network, "input", options=dict(variant.options))
    expected, _ = explainer.low_res(_inputs(test, range(1, n)), test.targets()[1:], baselines=empty)
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-5)


def test_balanced_sample_splits_the_count_over_the_cities():
    targets = np.array([0] * 10 + [1] * 3 + [2] * 10)
    picked = balanced_sample(targets, 12, 3, seed=0)
    assert np.bincount(targets[picked]).tolist() == [4, 3, 4]  # 4 per city, city 1 has only 3
    assert np.array_equal(picked, sample_indices(targets, 4, 0))
    assert np.bincount(targets[balanced_sample(targets, 1, 3)]).tolist() == [1, 1, 1]  # at least one each
