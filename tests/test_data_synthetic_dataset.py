"""Tests of the synthetic city generator: drawing, config semantics, determinism and the cache."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from citylens.core.ade20k import UNLABELLED, class_index
from citylens.data.synthetic import (
    ALWAYS_DRAWN,
    DEFAULT_CITIES,
    OPTIONAL,
    city_probabilities,
    ensure_synthetic,
    generate,
    normalize_cities,
    render_scene,
    renderable_classes,
)
from citylens.data.synthetic import dataset as synthetic

SMALL = {"cities": DEFAULT_CITIES, "images_per_city": 4, "size": 48, "seed": 3, "progress": False}


def _classes(label: np.ndarray) -> set[str]:
    return {name for name in renderable_classes() if (label == class_index(name)).any()}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("size", [48, 224])
def test_scene_shapes_dtypes_and_labels(size: int) -> None:
    image, label = render_scene(0, size, {"car": True, "tree": True, "bus": False}, night=True)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert label.shape == (size, size) and label.dtype == np.uint8
    assert not (label == UNLABELLED).any()
    assert _classes(label) >= {"car", "tree", *ALWAYS_DRAWN}
    assert "bus" not in _classes(label)
    assert set(np.unique(label)) <= {class_index(n) for n in renderable_classes()}


@pytest.mark.parametrize("name", renderable_classes())
def test_every_renderable_class_is_drawn_when_present(name: str) -> None:
    objects = set() if name in ALWAYS_DRAWN else {name}
    for seed in range(3):
        for size in (48, 96):
            _, label = render_scene(seed, size, objects, night=seed == 1)
            assert _classes(label) == set(ALWAYS_DRAWN) | objects


def test_all_classes_together_stay_visible() -> None:
    for seed in range(10):
        _, label = render_scene(seed, 64, set(OPTIONAL))
        assert _classes(label) == set(renderable_classes())


def test_unknown_object_is_rejected() -> None:
    with pytest.raises(ValueError, match="spaceship"):
        render_scene(0, 64, {"spaceship"})


def test_planted_classes_leave_the_shared_grammar() -> None:
    probs = city_probabilities(normalize_cities(DEFAULT_CITIES), other_city_rate=0.1)
    assert probs["tokyo"]["signboard"] == 0.9 and probs["pittsburgh"]["signboard"] == 0.1
    assert probs["pittsburgh"]["earth"] == 0.9 and probs["tokyo"]["earth"] == 0.1
    assert probs["tokyo"]["tree"] == probs["pittsburgh"]["tree"] == synthetic.BASE_RATES["tree"]


@pytest.mark.parametrize(
    ("cities", "key"),
    [
        ({"tokyo": {"planted": {"spaceship": 0.5}}, "pgh": {}}, "data.cities.tokyo.planted.spaceship"),
        ({"tokyo": {"spaceship": 0.5}, "pgh": {}}, "data.cities.tokyo.spaceship"),
        ({"tokyo": {"sky": 0.5}, "pgh": {}}, "data.cities.tokyo.sky"),
        ({"tokyo": {"fence": 1.5}, "pgh": {}}, "data.cities.tokyo.fence"),
        ({"tokyo": {"fence": "often"}, "pgh": {}}, "data.cities.tokyo.fence"),
        ({"tokyo": {"fence": 0.9}}, "data.cities"),
        ({"to/kyo": {}, "pgh": {}}, "data.cities.to/kyo"),
    ],
)
def test_bad_config_names_the_key(cities: dict, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        normalize_cities(cities)


def test_unknown_class_error_lists_renderable() -> None:
    with pytest.raises(ValueError, match=r"not a renderable class; renderable: \[.*'signboard'"):
        normalize_cities({"tokyo": {"planted": {"spaceship": 0.5}}, "pgh": {}})


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


def test_label_maps_agree_with_planted_frequencies(tmp_path: Path) -> None:
    n = 400
    manifest = generate(tmp_path, DEFAULT_CITIES, n, size=48, seed=11, progress=False)
    expected = manifest["probabilities"]
    for city, records in manifest["images"].items():
        contains = {name: 0 for name in OPTIONAL}
        for record in records:
            found = _classes(np.asarray(Image.open(tmp_path / record["labels"])))
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
        final = tmp_path / f"synthetic-{synthetic.settings_hash(synthetic._settings(*args[:6]))}"
        shutil.copytree(winner, final)
        (final / "winner.txt").write_text("first")
        return manifest

    monkeypatch.setattr(synthetic, "generate", generate_while_another_process_finishes)
    root = ensure_synthetic(tmp_path, **SMALL)
    assert (root / "winner.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, ".locks", "winner"])
