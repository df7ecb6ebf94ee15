"""Label-map cache: build once and reuse, resume after an interruption, refuse incomplete caches, locking.

The segmenter is the real ground-truth segmenter over hand-made label PNGs, wrapped to count (and, where a
test wants an interruption, fail) its calls.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from citylens.core.records import ImageRecord
from citylens.core.view import label_view
from citylens.segment import GroundTruthSegmenter, LabelMapCache, Segmenter, ids_digest, label_cache_key

SIZE = 8
N_IMAGES = 10


class Counting(Segmenter):
    """Delegates to a segmenter, recording the start image id of each call; fails on call `fail_on`."""

    def __init__(self, inner: Segmenter, fail_on: int | None = None, started=None) -> None:
        self.inner, self.size, self.fail_on, self.started = inner, inner.size, fail_on, started
        self.calls: list[str] = []

    def identity(self) -> str:
        return self.inner.identity()

    def __call__(self, images: torch.Tensor, records: Sequence[ImageRecord]) -> torch.Tensor:
        self.calls.append(records[0].image_id)
        if self.started is not None:
            self.started.set()
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("interrupted")
        return self.inner(images, records)


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[list[ImageRecord], np.ndarray]:
    """Ten images with random 12x12 label PNGs, and their expected label maps in the 8x8 view."""
    rng = np.random.default_rng(0)
    records, expected = [], []
    for i in range(N_IMAGES):
        label = rng.integers(0, 150, size=(12, 12), dtype=np.uint8)
        label[0, :] = 255
        path = tmp_path / f"label{i}.png"
        Image.fromarray(label).save(path)
        records.append(ImageRecord(f"c/img{i}.jpg", tmp_path / f"img{i}.jpg", "c", f"p{i}", path))
        expected.append(label_view(label, SIZE))
    return records, np.stack(expected)


def batches(records: list[ImageRecord], batch_size: int = 3) -> Iterator[tuple[int, torch.Tensor, list]]:
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        yield start, torch.zeros((len(chunk), 3, SIZE, SIZE), dtype=torch.uint8), chunk


def make_cache(root: Path, records: list[ImageRecord], split: str = "test") -> LabelMapCache:
    key = label_cache_key("fp-1234", split, GroundTruthSegmenter(SIZE), SIZE, [r.image_id for r in records])
    return LabelMapCache(root, key)


def test_build_then_reuse(tmp_path: Path, dataset, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="citylens.segment")
    records, expected = dataset
    cache = make_cache(tmp_path / "cache", records)
    first = Counting(GroundTruthSegmenter(SIZE))
    labels = cache.build(first, batches(records), N_IMAGES, progress=False)
    assert first.calls == ["c/img0.jpg", "c/img3.jpg", "c/img6.jpg", "c/img9.jpg"]
    assert isinstance(labels, np.memmap) and labels.dtype == np.uint8 and not labels.flags.writeable
    np.testing.assert_array_equal(labels, expected)
    assert cache.is_complete() and cache.done_ranges() == [[0, N_IMAGES]]
    manifest = json.loads(cache.complete_path.read_text())
    assert manifest["image_ids"] == [r.image_id for r in records] and manifest["key"] == cache.key
    assert any("building label-map cache" in m for m in caplog.messages)

    caplog.clear()
    again = make_cache(tmp_path / "cache", records)
    second = Counting(GroundTruthSegmenter(SIZE))
    np.testing.assert_array_equal(again.build(second, batches(records), N_IMAGES, progress=False), expected)
    assert second.calls == []
    assert any(m.startswith(f"label-map cache hit: {again.dir} (10 images") for m in caplog.messages)
    chunks = list(again.chunks(4))
    assert [start for start, _ in chunks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), expected)


def test_resume_after_interruption(tmp_path: Path, dataset) -> None:
    records, expected = dataset
    cache = make_cache(tmp_path / "cache", records)
    failing = Counting(GroundTruthSegmenter(SIZE), fail_on=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.build(failing, batches(records), N_IMAGES, progress=False)
    assert not cache.is_complete() and cache.done_ranges() == [[0, 6]]
    with pytest.raises(FileNotFoundError, match="incomplete"):
        cache.open()

    resumed = Counting(GroundTruthSegmenter(SIZE))
    labels = make_cache(tmp_path / "cache", records).build(
        resumed, batches(records), N_IMAGES, progress=False
    )
    assert resumed.calls == ["c/img6.jpg", "c/img9.jpg"]
    np.testing.assert_array_equal(labels, expected)


def test_resume_reuses_only_exactly_matching_chunks(tmp_path: Path, dataset) -> None:
    records, expected = dataset
    for batch_size, expected_calls in [
        (4, ["c/img4.jpg", "c/img8.jpg"]),
        (3, ["c/img0.jpg", "c/img3.jpg", "c/img6.jpg", "c/img9.jpg"]),
    ]:
        cache = make_cache(tmp_path / f"cache{batch_size}", records)
        failing = Counting(GroundTruthSegmenter(SIZE), fail_on=2)
        with pytest.raises(RuntimeError):
            cache.build(failing, batches(records, 4), N_IMAGES, progress=False)
        assert cache.done_ranges() == [[0, 4]]
        resumed = Counting(GroundTruthSegmenter(SIZE))
        labels = cache.build(resumed, batches(records, batch_size), N_IMAGES, progress=False)
        assert resumed.calls == expected_calls
        np.testing.assert_array_equal(labels, expected)


def test_incomplete_cache_refuses_open(tmp_path: Path, dataset) -> None:
    records, _ = dataset
    cache = make_cache(tmp_path / "cache", records)
    assert not cache.is_complete()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        cache.open()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        next(cache.chunks(2))
    with pytest.raises(RuntimeError, match="incomplete"):
        cache.build(GroundTruthSegmenter(SIZE), batches(records[:6]), N_IMAGES, progress=False)
    assert not cache.is_complete()


def test_key_decides_the_folder(tmp_path: Path, dataset) -> None:
    records, _ = dataset
    ids = [r.image_id for r in records]
    base = make_cache(tmp_path, records)
    assert LabelMapCache(tmp_path, dict(reversed(list(base.key.items())))).dir == base.dir
    assert make_cache(tmp_path, records, split="val").dir != base.dir
    other = label_cache_key("fp-1234", "test", GroundTruthSegmenter(SIZE, ade20k_annotation=True), SIZE, ids)
    assert LabelMapCache(tmp_path, other).dir != base.dir
    assert make_cache(tmp_path, records[::-1]).dir != base.dir
    assert base.key["image_ids"] == ids_digest(ids) != ids_digest(ids[::-1])


def test_refuses_mismatched_segmenter_or_images(tmp_path: Path, dataset) -> None:
    """Labels are never kept for images other than those they were computed for."""
    records, expected = dataset
    cache = make_cache(tmp_path, records)
    with pytest.raises(ValueError, match="identity"):
        cache.build(GroundTruthSegmenter(SIZE, ade20k_annotation=True), batches(records), N_IMAGES)
    shuffled = records[1:] + records[:1]
    with pytest.raises(ValueError, match="image ids"):
        cache.build(GroundTruthSegmenter(SIZE), batches(shuffled), N_IMAGES, progress=False)
    assert not cache.is_complete() and cache.done_ranges() == []
    with pytest.raises(RuntimeError, match="interrupted"):
        cache.build(
            Counting(GroundTruthSegmenter(SIZE), fail_on=3), batches(shuffled), N_IMAGES, progress=False
        )
    assert cache.done_ranges() == [[0, 6]]
    ordered = Counting(GroundTruthSegmenter(SIZE))
    np.testing.assert_array_equal(cache.build(ordered, batches(records), N_IMAGES, progress=False), expected)
    assert ordered.calls == ["c/img0.jpg", "c/img3.jpg", "c/img6.jpg", "c/img9.jpg"]


def _build_in_child(root: Path, records: list[ImageRecord], started, calls_path: Path) -> None:
    class Slow(Counting):
        def __call__(self, images: torch.Tensor, records: Sequence[ImageRecord]) -> torch.Tensor:
            time.sleep(0.1)
            return super().__call__(images, records)

    segmenter = Slow(GroundTruthSegmenter(SIZE), started=started)
    make_cache(root, records).build(segmenter, batches(records), N_IMAGES, progress=False)
    calls_path.write_text(json.dumps(segmenter.calls))


def test_concurrent_builders_wait_and_reuse(
    tmp_path: Path, dataset, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="citylens.segment")
    caplog.set_level(logging.INFO, logger="citylens")
    records, expected = dataset
    context = multiprocessing.get_context("fork")
    started = context.Event()
    child = context.Process(
        target=_build_in_child, args=(tmp_path, records, started, tmp_path / "calls.json")
    )
    child.start()
    try:
        assert started.wait(timeout=30)
        waiting = Counting(GroundTruthSegmenter(SIZE))
        labels = make_cache(tmp_path, records).build(waiting, batches(records), N_IMAGES, progress=False)
    finally:
        child.join(timeout=30)
    assert child.exitcode == 0
    assert waiting.calls == []
    assert len(json.loads((tmp_path / "calls.json").read_text())) == 4
    np.testing.assert_array_equal(labels, expected)
    # The wait says whose lock it is (the child's pid) and, once over, how long it took.
    assert any(
        f"waiting for lock {tmp_path}" in m and f"held by pid {child.pid} on " in m for m in caplog.messages
    )
    assert any(m.startswith("got lock ") and m.endswith(" s") for m in caplog.messages)
    assert any("label-map cache hit" in m for m in caplog.messages)
