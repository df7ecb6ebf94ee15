"""The segmenter interface and the shared batching of neural segmenters (citylens/segment/base.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from citylens.core.io import sha256
from citylens.segment import base
from citylens.segment.base import NUM_CLASSES, NetworkSegmenter

pytestmark = pytest.mark.usefixtures("one_thread")


class Halves(NetworkSegmenter):
    """Left half class `left`, right half class `right`, at half the input size; records each batch."""

    def __init__(self, size=8, batch_size=2, bf16=False, classes=NUM_CLASSES, left=3, right=7):
        super().__init__(size, "cpu", batch_size, bf16)
        self.batches: list[torch.Tensor] = []
        self.classes, self.left, self.right = classes, left, right

    def identity(self) -> str:
        return "halves"

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        n, half = x.shape[0], self.size // 2
        logits = torch.zeros((n, self.classes, half, half))
        logits[:, self.left, :, : half // 2] = 5.0
        logits[:, self.right, :, half // 2 :] = 5.0
        return logits


def test_the_network_segmenter_upsamples_and_takes_the_argmax(image_records, random_images):
    segmenter = Halves(size=8)
    out = segmenter(random_images(3, 8), image_records(3))
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8) and out.device.type == "cpu"
    assert (out[:, :, :4] == 3).all() and (out[:, :, 4:] == 7).all()


def test_batches_are_split_and_scaled_to_unit_floats(image_records, random_images):
    images = random_images(5, 8)
    images[0] = 255
    segmenter = Halves(size=8, batch_size=2)
    segmenter(images, image_records(5))
    assert [b.shape[0] for b in segmenter.batches] == [2, 2, 1]
    x = torch.cat(segmenter.batches)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, images.float() / 255)
    assert x[0].min() == 1.0


def test_a_wrong_number_of_classes_is_refused(image_records, random_images):
    with pytest.raises(RuntimeError, match=f"produced 10 classes, expected {NUM_CLASSES}"):
        Halves(size=8, classes=10, left=1, right=2)(random_images(1, 8), image_records(1))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (
            torch.zeros((2, 3, 8, 8), dtype=torch.float32),
            r"uint8 images of shape \(N, 3, 8, 8\).*torch.float32",
        ),
        (torch.zeros((2, 3, 8, 6), dtype=torch.uint8), r"got torch.uint8 \(2, 3, 8, 6\)"),
        (torch.zeros((2, 1, 8, 8), dtype=torch.uint8), r"got torch.uint8 \(2, 1, 8, 8\)"),
        (torch.zeros((3, 8, 8), dtype=torch.uint8), r"got torch.uint8 \(3, 8, 8\)"),
    ],
)
def test_inputs_that_are_not_analysis_views_are_refused(image_records, images, match):
    with pytest.raises(ValueError, match=match):
        Halves(size=8)(images, image_records(2))


def test_one_record_per_image(image_records, random_images):
    with pytest.raises(ValueError, match="got 2 images but 3 records"):
        Halves(size=8)(random_images(2, 8), image_records(3))


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        Halves(batch_size=0)


def test_default_device_and_autocast():
    assert base.default_device("cpu") == torch.device("cpu")
    assert base.default_device(torch.device("cpu")).type == "cpu"
    assert base.default_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    # bf16 is asked for, but on the CPU the batch runs in float32 (no autocast).
    segmenter = Halves(bf16=True)
    with segmenter._autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_file_fingerprint_is_the_content_hash_wherever_the_file_lies(tmp_path: Path):
    weights = tmp_path / "a" / "weights.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"\x00\x01" * 1000)
    fingerprint = base.file_fingerprint(weights)
    assert fingerprint == sha256(weights)[:16] and len(fingerprint) == 16
    copy = tmp_path / "b" / "weights.bin"
    copy.parent.mkdir()
    shutil.copy(weights, copy)
    assert base.file_fingerprint(str(copy)) == fingerprint
    copy.write_bytes(b"other weights")
    assert base.file_fingerprint(copy) == sha256(copy)[:16] != fingerprint


def test_file_fingerprint_is_memoised_per_size_and_mtime(tmp_path: Path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"aaaa")
    first = base.file_fingerprint(path)
    stat = path.stat()
    path.write_bytes(b"bbbb")  # same size...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the same mtime: the memo answers
    assert base.file_fingerprint(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert base.file_fingerprint(path) == sha256(path)[:16] != first
    with pytest.raises(FileNotFoundError):
        base.file_fingerprint(tmp_path / "missing.bin")


def test_upsample_uses_half_pixel_centres():
    logits = torch.tensor([[[[0.0, 1.0]]]]).expand(1, 1, 2, 2)
    out = base.upsample(logits, 4)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert base.upsample(logits, 2) is logits


def test_resize_antialiases_and_is_a_no_op_at_equal_size():
    x = torch.zeros((1, 1, 8, 8))
    x[..., ::4] = 1.0  # every fourth column lit: a quarter of the pixels
    small = base.resize(x, 4, 2)
    assert small.shape == (1, 1, 4, 2)
    # Plain bilinear sampling would read columns 1-2 and 5-6 only (all 0); the antialiased resize averages.
    assert (small > 0.15).all() and (small < 0.35).all() and (small == small[:, :, :1]).all()
    assert base.resize(x, 8, 8) is x


def test_normalize_per_channel():
    x = torch.ones((2, 3, 2, 2)) * torch.tensor([0.5, 1.0, 0.0]).view(1, 3, 1, 1)
    out = base.normalize(x, [0.5, 0.5, 0.5], [0.5, 0.25, 0.1])
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 2.0, -5.0]))
    assert out.shape == x.shape and out.dtype == x.dtype
