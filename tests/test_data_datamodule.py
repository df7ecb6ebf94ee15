"""The data module on folder datasets: broken files skipped and listed, a smoke training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from citylens.data import FolderCityData
from citylens.pipeline import Variant

VARIANT = f"analysis/{Variant().name}"


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
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.uint8


def test_city_with_no_readable_image_is_an_error(write_folder_dataset, tmp_path: Path):
    root = tmp_path / "data"
    write_folder_dataset(root, {"paris": 6})
    (root / "rome").mkdir()
    (root / "rome" / "a.jpg").write_bytes(b"")
    dm = FolderCityData(root=str(root), input_size=32, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="'rome' has no readable image"):
        dm.setup()


def test_smoke_training_on_a_folder_dataset(compose_cfg, write_folder_dataset, tmp_path: Path):
    from citylens.app.train import train

    root = tmp_path / "photos"
    write_folder_dataset(root, {"paris": 15, "oxford": 15})
    overrides = [
        "experiment=smoke",
        "data=folder",
        f"data.root={root}",
        "logger=none",
        "model=simple",
        "callbacks.progress_bar=null",
        "analysis.steps.explain.thumbnails=10",
    ]
    train(compose_cfg(overrides, tmp_path / "run", tmp_path / "cache"))
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert '"oxford"' in metrics and '"paris"' in metrics
    assert (tmp_path / "run" / VARIANT / "masks" / "meta.json").is_file()
