"""The synthetic dataset: planted rates, deterministic generation, the cache, counterfactual re-rendering."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from citylens.core.ade20k import class_index
from citylens.data.synthetic import (
    ALWAYS_DRAWN,
    DEFAULT_CITIES,
    JPEG_QUALITY,
    OPTIONAL,
    SyntheticCities,
    city_probabilities,
    ensure_synthetic,
    generate,
    normalize_cities,
)
from citylens.data.synthetic import dataset as synthetic

SMALL = {"cities": DEFAULT_CITIES, "images_per_city": 4, "size": 48, "seed": 3, "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_planted_classes_leave_the_shared_grammar() -> None:
    probs = city_probabilities(normalize_cities(DEFAULT_CITIES), other_city_rate=0.1)
    assert probs["tokyo"]["signboard"] == 0.9 and probs["pittsburgh"]["signboard"] == 0.1
    assert probs["pittsburgh"]["earth"] == 0.9 and probs["tokyo"]["earth"] == 0.1
    assert probs["tokyo"]["tree"] == probs["pittsburgh"]["tree"] == synthetic.BASE_RATES["tree"]


def test_generation_is_deterministic_and_worker_independent(tmp_path: Path) -> None:
    manifest = generate(tmp_path / "a", **SMALL)
    generate(tmp_path / "b", **SMALL)
    generate(tmp_path / "c", **SMALL, workers=2)
    a = _files(tmp_path / "a")
    assert len(a) == 1 + 2 * 2 * SMALL["images_per_city"]
    assert a == _files(tmp_path / "b") == _files(tmp_path / "c")
    assert "tokyo/tokyo_00003.jpg" in a and "pittsburgh/pittsburgh_00000.labels.png" in a
    assert manifest["planted"] == DEFAULT_CITIES and manifest["seed"] == 3
    generate(tmp_path / "d", **{**SMALL, "seed": 4})
    assert _files(tmp_path / "d")["tokyo/tokyo_00000.jpg"] != a["tokyo/tokyo_00000.jpg"]


def test_written_files_decode(tmp_path: Path) -> None:
    generate(tmp_path, **SMALL)
    image = Image.open(tmp_path / "tokyo" / "tokyo_00000.jpg")
    label = Image.open(tmp_path / "tokyo" / "tokyo_00000.labels.png")
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (48, 48)
    assert label.format == "PNG" and label.mode == "L" and label.size == (48, 48)


def test_label_maps_agree_with_planted_frequencies(label_classes, tmp_path: Path) -> None:
    n = 400
    manifest = generate(tmp_path, cities=DEFAULT_CITIES, images_per_city=n, size=48, seed=11, progress=False)
    expected = manifest["probabilities"]
    for city, records in manifest["images"].items():
        contains = {name: 0 for name in OPTIONAL}
        for record in records:
            found = label_classes(np.asarray(Image.open(tmp_path / record["labels"])))
            assert found - set(ALWAYS_DRAWN) == set(record["objects"]), record["labels"]
            for name in found - set(ALWAYS_DRAWN):
                contains[name] += 1
        for name in OPTIONAL:
            p = expected[city][name]
            assert abs(contains[name] / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9, (city, name)
    assert expected["tokyo"]["signboard"] == 0.9 and expected["pittsburgh"]["signboard"] == 0.1


def test_ensure_synthetic_generates_once_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = synthetic.generate

    def counting_generate(root, *args, **kwargs):
        calls.append(root)
        return real(root, *args, **kwargs)

    monkeypatch.setattr(synthetic, "generate", counting_generate)
    settings = {**SMALL, "other_city_rate": 0.1, "night_rate": 0.3}
    first = ensure_synthetic(tmp_path, **settings)
    mtime = (first / "manifest.json").stat().st_mtime_ns
    second = ensure_synthetic(tmp_path, **settings)
    assert first == second and first.name.startswith("synthetic-") and len(calls) == 1
    assert (second / "manifest.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", first.name]
    other = ensure_synthetic(tmp_path, **{**settings, "seed": 4})
    assert other != first and len(calls) == 2
    reordered = dict(reversed(list(DEFAULT_CITIES.items())))
    assert ensure_synthetic(tmp_path, **{**settings, "cities": reordered}) not in (first, other)


def test_interrupted_generation_never_looks_complete_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = synthetic._render_job
    done: list[int] = []

    def crash_after_three(job):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(1)
        return real(job)

    monkeypatch.setattr(synthetic, "_render_job", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path, **SMALL)
    (partial,) = [p for p in tmp_path.iterdir() if p.name != ".locks"]
    assert partial.name.endswith(".partial") and not (partial / "manifest.json").exists()
    kept = sorted(partial.rglob("*.jpg"))
    assert len(kept) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in kept}
    (partial / "tokyo" / ".tokyo_00009.tmp123.jpg").write_bytes(b"half")  # what a SIGKILL leaves mid-write
    monkeypatch.setattr(synthetic, "_render_job", real)
    (tmp_path / ".synthetic-killed.partial").mkdir()  # what older versions left behind
    root = ensure_synthetic(tmp_path, **SMALL)
    assert (root / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [root.name, ".locks", ".synthetic-killed.partial"]
    )
    assert {p.name: p.stat().st_mtime_ns for p in root.rglob("*.jpg") if p.name in stamps} == stamps
    assert not list(root.rglob(".*"))
    generate(tmp_path / "fresh", **SMALL)
    assert (root / "manifest.json").read_text() == (tmp_path / "fresh" / "manifest.json").read_text()
    for path in sorted((tmp_path / "fresh").rglob("*.*g")):
        assert (root / path.relative_to(tmp_path / "fresh")).read_bytes() == path.read_bytes()


def test_half_written_final_directory_is_refused(tmp_path: Path) -> None:
    root = ensure_synthetic(tmp_path, **SMALL)
    (root / "manifest.json").unlink()
    with pytest.raises(RuntimeError, match="not a complete generation"):
        ensure_synthetic(tmp_path, **SMALL)


def test_loser_of_the_rename_race_uses_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic.generate
    winner = tmp_path / "winner"
    real(winner, **SMALL)

    def generate_while_another_process_finishes(root, *args, **kwargs):
        manifest = real(root, *args, **kwargs)
        final = tmp_path / f"synthetic-{synthetic.settings_hash(synthetic.generation_settings(**kwargs))}"
        shutil.copytree(winner, final)
        (final / "winner.txt").write_text("first")
        return manifest

    monkeypatch.setattr(synthetic, "generate", generate_while_another_process_finishes)
    root = ensure_synthetic(tmp_path, **SMALL)
    assert (root / "winner.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, ".locks", "winner"])


# ---- Counterfactual scenes: SyntheticCities renders any image of a dataset again, with classes removed.

SETTINGS = {"cities": DEFAULT_CITIES, "images_per_city": 6, "size": 48, "seed": 5, "progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCities:
    root = tmp_path_factory.mktemp("cf")
    generate(root, **SETTINGS)
    return SyntheticCities(root)


def test_removing_nothing_reproduces_the_files(dataset: SyntheticCities) -> None:
    assert len(dataset.index) >= 10  # the loop below checks something
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
    checked = 0
    for image_id in list(dataset.index)[:6]:
        objects, _ = dataset.contents(image_id)
        absent = set(OPTIONAL) - set(objects)
        checked += bool(absent)
        rgb, labels = dataset.render(image_id)
        cf_rgb, cf_labels = dataset.render(image_id, remove=absent)
        assert np.array_equal(rgb, cf_rgb) and np.array_equal(labels, cf_labels)
    assert checked == 6  # every image lacks some optional object: each one removed something absent


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
