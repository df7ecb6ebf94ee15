"""What every step reads: the context's label maps from the shared cache (or a clear refusal), the
checkpoint's identity, and what the typed data view says about its data."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

from citylens.core.records import ImageRecord
from citylens.pipeline import Variant
from citylens.pipeline.context import Context, data_root, is_synthetic
from citylens.segment import GroundTruthSegmenter


def with_labels(data, folder: Path):
    """The split view with a hand-made label PNG (class = image index) for every record."""
    folder.mkdir()
    records = []
    for i, r in enumerate(data.records):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((data.input_size, data.input_size), i, np.uint8)).save(path)
        records.append(ImageRecord(r.image_id, r.path, r.city, r.place, path))
    return dataclasses.replace(data, records=records)


def test_label_maps_come_from_the_segmenter_through_the_cache(split_data, tmp_path: Path):
    data = with_labels(split_data(n=6, size=8), tmp_path / "labels")
    context = Context(
        nn.Identity(), "simple", data, tmp_path / "run", Variant(), GroundTruthSegmenter(8), tmp_path
    )
    labels = np.asarray(context.label_maps("objects", batch_size=4))
    assert labels.shape == (6, 8, 8) and [int(m[0, 0]) for m in labels] == list(range(6))
    (tmp_path / "labels" / "0.png").unlink()  # cached: not read again
    assert np.array_equal(np.asarray(context.label_maps("causal deletion")), labels)


def test_label_maps_refused_without_segmenter_and_skipped_without_stored_labels(
    split_data, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    data = split_data(n=4, size=8)
    context = Context(nn.Identity(), "simple", data, tmp_path, Variant())
    with pytest.raises(ValueError, match="objects: needs label maps, but no segmenter is configured"):
        context.label_maps("objects")
    context = Context(nn.Identity(), "simple", data, tmp_path, Variant(), GroundTruthSegmenter(8), tmp_path)
    assert context.label_maps("objects") is None
    assert "objects skipped: 4 test images have no stored label map (e.g. pittsburgh/0)" in caplog.text


def test_checkpoint_identity_is_its_contents(split_data, tmp_path: Path):
    data = split_data(n=2)
    assert Context(nn.Identity(), "simple", data, tmp_path, Variant()).checkpoint_sha256 is None
    missing = Context(
        nn.Identity(), "simple", data, tmp_path, Variant(), checkpoint=str(tmp_path / "no.ckpt")
    )
    assert missing.checkpoint_sha256 is None
    (tmp_path / "best.ckpt").write_bytes(b"weights")
    context = Context(
        nn.Identity(), "simple", data, tmp_path, Variant(), checkpoint=str(tmp_path / "best.ckpt")
    )
    assert context.checkpoint_sha256 == hashlib.sha256(b"weights").hexdigest()
    assert context.out == tmp_path / "analysis" / Variant().name


def test_data_facts(split_data):
    data = split_data(n=2)
    assert is_synthetic(data)
    assert not is_synthetic(dataclasses.replace(data, facts={"kind": "folder"}))
    assert data_root(dataclasses.replace(data, facts={"kind": "synthetic", "root": "/data/x"})) == Path(
        "/data/x"
    )
