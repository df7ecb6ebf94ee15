"""The data module on folder datasets: scanning, skipping broken files, splits, the view cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from citylens.core.records import ImageRecord
from citylens.core.view import analysis_view, label_view
from citylens.data import FolderCityData
from citylens.data.cache import ViewCache
from citylens.data.folder import scan_folder
from citylens.data.split import balance, split_records
from citylens.errors import ConfigError
from citylens.pipeline import Variant

VARIANT = f"analysis/{Variant().name}"


def _records(n_places: int, views: int, city: str = "a") -> list[ImageRecord]:
    return [
        ImageRecord(f"{city}/{p:03d}_{v}.jpg", Path("x"), city, f"{city}{p}")
        for p in range(n_places)
        for v in range(views)
    ]


def test_split_is_stratified_place_aware_and_seeded():
    records = _records(50, 4, "a") + _records(30, 4, "b")
    splits = split_records(records, seed=3)
    for city, n in (("a", 200), ("b", 120)):
        sizes = [sum(r.city == city for r in splits[s]) for s in ("train", "val", "test")]
        assert sum(sizes) == n
        assert abs(sizes[0] - 0.6 * n) <= 4 and abs(sizes[2] - 0.2 * n) <= 4
    places = {s: {r.place for r in splits[s]} for s in splits}
    assert not places["train"] & places["test"] and not places["val"] & places["test"]
    assert splits == split_records(list(reversed(records)), seed=3)
    assert splits["test"] != split_records(records, seed=4)["test"]
    assert [r.image_id for r in splits["test"]] == sorted(r.image_id for r in splits["test"])


def test_per_image_split_and_bad_split_values():
    records = _records(20, 5)
    by_image = split_records(records, seed=0, by="image")
    assert {r.place for r in by_image["train"]} & {r.place for r in by_image["test"]}
    with pytest.raises(ValueError, match="data.split_by"):
        split_records(records, by="panorama")
    with pytest.raises(ValueError, match="data.split"):
        split_records(records, fractions=(0.5, 0.5, 0.5))


def test_balance_subsamples_to_smallest_city():
    kept = balance(_records(10, 3, "a") + _records(4, 3, "b"), seed=0)
    assert sum(r.city == "a" for r in kept) == sum(r.city == "b" for r in kept) == 12


def test_analysis_view_and_label_view_share_geometry():
    image = np.zeros((60, 100, 3), np.uint8)
    label = np.zeros((60, 100), np.uint8)
    image[:, 50:] = 255
    label[:, 50:] = 7
    view = analysis_view(Image.fromarray(image), 30)
    labels = label_view(label, 30)
    assert view.shape == (30, 30, 3) and labels.shape == (30, 30)
    assert set(np.unique(labels)) == {0, 7}
    bright = view[..., 0] > 127
    assert (bright == (labels == 7)).mean() > 0.95


def test_scan_folder_errors_name_key_and_layout(tmp_path: Path):
    with pytest.raises(ConfigError, match="data.root.*<city>"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="need at least 2"):
        scan_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        scan_folder(tmp_path)


def test_broken_files_are_skipped_and_listed(write_folder_dataset, tmp_path: Path):
    root = tmp_path / "data"
    write_folder_dataset(root, {"paris": 12, "oxford": 12})
    (root / "paris" / "zero.jpg").write_bytes(b"")
    (root / "paris" / "text.jpg").write_text("not an image")
    good = (root / "oxford" / "part0" / "oxford_002.jpg").read_bytes()
    (root / "oxford" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    dm = FolderCityData(root=str(root), input_size=32, cache_dir=str(tmp_path / "cache"), balance=False)
    dm.setup()
    assert set(dm.failures) == {"paris/zero.jpg", "paris/text.jpg", "oxford/truncated.jpg"}
    assert dm.failures["paris/zero.jpg"] == "zero-byte file"
    assert sum(len(v) for v in dm.splits.values()) == 24
    dm.write_split(tmp_path)
    skipped = (tmp_path / "skipped_images.csv").read_text()
    assert "paris/text.jpg" in skipped and "oxford/truncated.jpg" in skipped
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 32, 32) and x.dtype.is_floating_point


def test_city_with_no_readable_image_is_an_error(write_folder_dataset, tmp_path: Path):
    root = tmp_path / "data"
    write_folder_dataset(root, {"paris": 6})
    (root / "rome").mkdir()
    (root / "rome" / "a.jpg").write_bytes(b"")
    dm = FolderCityData(root=str(root), input_size=32, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="'rome' has no readable image"):
        dm.setup()


def test_view_cache_is_reused_and_resumes(write_folder_dataset, tmp_path: Path):
    root = tmp_path / "data"
    write_folder_dataset(root, {"paris": 8, "oxford": 8})
    kwargs = dict(root=str(root), input_size=32, cache_dir=str(tmp_path / "cache"))
    first = FolderCityData(**kwargs)
    first.setup()
    views = np.array(first.cache.images())
    data = first.cache.directory / "data.npy"
    stamp = data.stat().st_mtime_ns
    second = FolderCityData(**kwargs)
    second.setup()
    assert data.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.array(second.cache.images()), views)
    (first.cache.directory / "complete.json").unlink()
    third = FolderCityData(**kwargs)
    assert third.cache.array.pending() == []
    third.setup()
    np.testing.assert_array_equal(np.array(third.cache.images()), views)


def test_real_photos_decode_through_the_folder_reader(real_photos, tmp_path: Path):

    root = tmp_path / "real"
    for city in ("oxford", "paris_sacre_coeur", "tokyo247", "san_francisco"):
        files = [p for p in (real_photos / city).rglob("*") if p.suffix.lower() in (".jpg", ".png")]
        for p in files[:4]:
            (root / city).mkdir(parents=True, exist_ok=True)
            (root / city / p.name).write_bytes(p.read_bytes())
    # Too few photos per city to split (tokyo247 has one), so the view cache is built directly.
    records = scan_folder(root)
    cache = ViewCache(tmp_path / "cache", records, 48)
    cache.build(progress=False)
    assert not cache.failures() and len(records) >= 10
    views = cache.images()
    assert views.shape == (len(records), 48, 48, 3) and views.std() > 10


def test_smoke_training_on_a_folder_dataset(compose_cfg, write_folder_dataset, tmp_path: Path):
    from citylens.train import train

    root = tmp_path / "photos"
    write_folder_dataset(root, {"paris": 15, "oxford": 15})
    overrides = [
        "experiment=smoke",
        "data=folder",
        f"data.root={root}",
        "logger=none",
        "model=simple",
        "callbacks.progress_bar=null",
        "callbacks.explain.thumbnails=10",
    ]
    train(compose_cfg(overrides, tmp_path / "run", tmp_path / "cache"))
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert '"oxford"' in metrics and '"paris"' in metrics
    assert (tmp_path / "run" / VARIANT / "masks" / "meta.json").is_file()
