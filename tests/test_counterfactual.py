"""Counterfactual scenes: the generator renders any image of a dataset again, with object classes removed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from citylens.core.ade20k import class_index
from citylens.data.synthetic import (
    DEFAULT_CITIES,
    JPEG_QUALITY,
    OPTIONAL,
    SyntheticCities,
    generate,
    render_scene,
)

SETTINGS = {"cities": DEFAULT_CITIES, "images_per_city": 6, "size": 48, "seed": 5, "progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCities:
    root = tmp_path_factory.mktemp("cf")
    generate(root, **SETTINGS)
    return SyntheticCities(root)


def test_removing_nothing_reproduces_the_files(dataset: SyntheticCities) -> None:
    for image_id in dataset.index:
        rgb, labels = dataset.render(image_id)
        stem = dataset.root / image_id[: -len(".jpg")]
        assert np.array_equal(labels, np.asarray(Image.open(f"{stem}.labels.png")))
        encoded = io.BytesIO()
        Image.fromarray(rgb).save(encoded, "JPEG", quality=JPEG_QUALITY)
        assert encoded.getvalue() == Path(f"{stem}.jpg").read_bytes(), image_id


def test_removing_an_object_changes_only_its_pixels(dataset: SyntheticCities) -> None:
    checked = 0
    for image_id in dataset.index:
        rgb, labels = dataset.render(image_id)
        objects, _ = dataset.contents(image_id)
        for name in objects:
            region = labels == class_index(name)
            cf_rgb, cf_labels = dataset.render(image_id, remove={name})
            assert np.array_equal(cf_rgb[~region], rgb[~region]), (image_id, name)
            assert np.array_equal(cf_labels[~region], labels[~region]), (image_id, name)
            assert not (cf_labels == class_index(name)).any(), (image_id, name)
            assert (cf_rgb[region] != rgb[region]).any(), (image_id, name)  # what lies behind shows
            checked += 1
    assert checked >= 10


def test_removing_several_objects_changes_only_their_pixels(dataset: SyntheticCities) -> None:
    image_id = max(dataset.index, key=lambda i: len(dataset.contents(i)[0]))
    objects, _ = dataset.contents(image_id)
    assert len(objects) >= 3
    rgb, labels = dataset.render(image_id)
    remove = set(objects[:3])
    region = np.isin(labels, [class_index(n) for n in remove])
    cf_rgb, cf_labels = dataset.render(image_id, remove=remove)
    assert np.array_equal(cf_rgb[~region], rgb[~region])
    assert not np.isin(cf_labels, [class_index(n) for n in remove]).any()


def test_removing_an_absent_class_is_a_no_op(dataset: SyntheticCities) -> None:
    for image_id in list(dataset.index)[:6]:
        objects, _ = dataset.contents(image_id)
        absent = set(OPTIONAL) - set(objects)
        rgb, labels = dataset.render(image_id)
        cf_rgb, cf_labels = dataset.render(image_id, remove=absent)
        assert np.array_equal(rgb, cf_rgb) and np.array_equal(labels, cf_labels)


def test_only_optional_classes_can_be_removed() -> None:
    with pytest.raises(ValueError, match="building"):
        render_scene(0, 48, {"car"}, remove={"building"})


def test_a_dataset_of_another_generator_version_is_refused(tmp_path: Path) -> None:
    generate(tmp_path, **{**SETTINGS, "images_per_city": 1})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "generator_version": 1}))
    with pytest.raises(ValueError, match="generator_version 1"):
        SyntheticCities(tmp_path)


def test_unknown_image_id_names_it(dataset: SyntheticCities) -> None:
    with pytest.raises(KeyError, match="tokyo/nowhere.jpg"):
        dataset.render("tokyo/nowhere.jpg")


def test_variants_drawn_together_equal_separate_renderings(dataset: SyntheticCities) -> None:
    image_id = max(dataset.index, key=lambda i: len(dataset.contents(i)[0]))
    objects, _ = dataset.contents(image_id)
    removes = [set(), *({p} for p in objects), set(objects[:2]), {"bus", "car"}]
    images, labels = dataset.render_variants(image_id, removes)
    assert images.shape == (len(removes), 48, 48, 3) and labels.shape == (len(removes), 48, 48)
    for k, remove in enumerate(removes):
        rgb, label = dataset.render(image_id, remove)
        assert np.array_equal(images[k], rgb) and np.array_equal(labels[k], label), remove
