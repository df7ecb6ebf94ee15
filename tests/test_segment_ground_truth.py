"""GroundTruthSegmenter: nearest resampling and crop, errors, ADE20K annotations (real ones included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from citylens.core.ade20k import UNLABELLED
from citylens.core.view import label_view
from citylens.segment import (
    GroundTruthSegmenter,
    ade20k_annotation_to_labels,
)

# One intra-op thread for the whole module (the fixture says why).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_ground_truth_nearest_resampling_and_crop(image_records, tmp_path: Path) -> None:
    """A 4x8 label map to a 2x2 view: rows 1, 3 and (after the centre crop) columns 3, 5 survive."""
    label = np.arange(32, dtype=np.uint8).reshape(4, 8)
    label[3, 5] = UNLABELLED
    path = tmp_path / "label.png"
    Image.fromarray(label).save(path)
    segmenter = GroundTruthSegmenter(size=2)
    out = segmenter(torch.zeros((1, 3, 2, 2), dtype=torch.uint8), image_records(1, [path]))
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 2)
    assert out[0].tolist() == [[11, 13], [27, UNLABELLED]]


def test_ground_truth_errors(image_records, tmp_path: Path) -> None:
    segmenter = GroundTruthSegmenter(size=4)
    images = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="city/img0.jpg"):
        segmenter(images, image_records(1))
    path = tmp_path / "ade_style.png"
    Image.fromarray(np.full((4, 4), 150, dtype=np.uint8)).save(path)
    with pytest.raises(ValueError, match="ade20k_annotation=True"):
        segmenter(images, image_records(1, [path]))
    with pytest.raises(ValueError, match="uint8 images"):
        segmenter(torch.zeros((1, 3, 5, 5), dtype=torch.uint8), image_records(1, [path]))


def test_ade20k_annotation_conversion() -> None:
    annotation = np.array([[0, 1, 2], [44, 150, 0]], dtype=np.uint8)
    assert ade20k_annotation_to_labels(annotation).tolist() == [[255, 0, 1], [43, 149, 255]]
    with pytest.raises(ValueError, match="out of range"):
        ade20k_annotation_to_labels(np.array([[151]], dtype=np.uint8))


def test_ground_truth_on_real_ade20k_annotations(image_records, real_photos: Path) -> None:
    ade20k_dir = real_photos / "ade20k" / "sceneparsing150"
    paths = sorted((ade20k_dir / "annotations").glob("*.png"))
    assert paths
    size = 96
    segmenter = GroundTruthSegmenter(size=size, ade20k_annotation=True)
    out = segmenter(
        torch.zeros((len(paths), 3, size, size), dtype=torch.uint8), image_records(len(paths), paths)
    )
    assert out.shape == (len(paths), size, size)
    for i, path in enumerate(paths):
        raw = np.asarray(Image.open(path))
        converted = np.where(raw == 0, 255, raw.astype(np.int16) - 1).astype(np.uint8)
        np.testing.assert_array_equal(out[i].numpy(), label_view(converted, size))
        labels = set(np.unique(out[i].numpy()).tolist())
        assert labels <= {v - 1 for v in np.unique(raw).tolist() if v > 0} | {UNLABELLED}
        assert max(labels - {UNLABELLED}) < 150
        image = Image.open(ade20k_dir / "images" / path.with_suffix(".jpg").name)
        assert image.size == Image.open(path).size
