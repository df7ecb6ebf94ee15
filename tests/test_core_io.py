"""Atomic writes, file locks and the resumable chunked array (citylens/core/io.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citylens.core import io


def _litter(folder: Path) -> list[str]:
    """Temporary files (`.<name>.tmp<pid>...`) left in a folder."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ---------------------------------------------------------------- hashes


def test_short_hash_ignores_key_order_and_has_the_asked_length():
    a = io.short_hash({"b": 1, "a": [1, 2]})
    assert a == io.short_hash({"a": [1, 2], "b": 1})
    assert len(a) == 12 and len(io.short_hash({"a": 1}, length=5)) == 5
    expected = hashlib.sha256(json.dumps({"a": [1, 2], "b": 1}, sort_keys=True).encode()).hexdigest()
    assert a == expected[:12]
    assert io.short_hash({"a": 1}) != io.short_hash({"a": 2})


def test_short_hash_accepts_values_json_cannot_write_through_str():
    assert io.short_hash({"p": Path("/x/y")}) == io.short_hash({"p": "/x/y"})


def test_sha256_of_a_file_larger_than_one_block(tmp_path: Path):
    data = os.urandom((1 << 20) + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert io.sha256(path) == hashlib.sha256(data).hexdigest()
    assert io.sha256(str(path)) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_bytes_replaces_the_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "deep" / "er" / "file.bin"
    io.atomic_write_bytes(path, b"old")
    io.atomic_write_bytes(str(path), b"new contents")
    assert path.read_bytes() == b"new contents"
    assert _litter(path.parent) == []


def test_atomic_write_bytes_removes_its_temporary_when_the_rename_fails(tmp_path: Path):
    # A directory stands where the file should go: the data is written, then os.replace fails.
    target = tmp_path / "out.json"
    target.mkdir()
    with pytest.raises(OSError):
        io.atomic_write_bytes(target, b"{}")
    assert target.is_dir()
    assert _litter(tmp_path) == []


def test_atomic_write_bytes_removes_its_temporary_when_the_write_fails(tmp_path: Path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"before")
    with pytest.raises(TypeError):
        io.atomic_write_bytes(target, "text is not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"before"
    assert _litter(tmp_path) == []


def test_atomic_write_text_and_json(tmp_path: Path):
    io.atomic_write_text(tmp_path / "t.txt", "Zürich ✓")
    assert (tmp_path / "t.txt").read_bytes() == "Zürich ✓".encode()
    io.atomic_write_json(tmp_path / "j.json", {"b": 2, "a": Path("p")})
    text = (tmp_path / "j.json").read_text()
    assert text == '{\n  "a": "p",\n  "b": 2\n}\n'


def test_read_json_returns_none_for_missing_or_broken_files(tmp_path: Path):
    assert io.read_json(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text('{"a": ')
    assert io.read_json(tmp_path / "half.json") is None
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert io.read_json(tmp_path / "ok.json") == {"a": [1, 2]}
    (tmp_path / "dir.json").mkdir()
    assert io.read_json(tmp_path / "dir.json") is None


def test_atomic_path_renames_only_when_the_block_succeeds(tmp_path: Path):
    path = tmp_path / "sub" / "table.csv"
    with io.atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path and tmp.suffix == ".csv"
        tmp.write_text("a\n1\n")
        assert not path.exists()
    assert path.read_text() == "a\n1\n"

    with pytest.raises(RuntimeError, match="boom"), io.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "a\n1\n"
    assert _litter(path.parent) == []


def test_write_csv_writes_without_the_index(tmp_path: Path):
    table = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}, index=[7, 8])
    out = io.write_csv(table, tmp_path / "t.csv")
    assert out == tmp_path / "t.csv"
    assert out.read_text() == "x,y\n1,a\n2,b\n"
    assert _litter(tmp_path) == []


# ---------------------------------------------------------------- locks


def test_file_lock_writes_the_holder_and_removes_it(tmp_path: Path):
    lock = tmp_path / "locks" / "a.lock"
    holder = tmp_path / "locks" / "a.lock.holder"
    with io.file_lock(lock):
        assert holder.read_text().startswith(f"pid {os.getpid()} on ")
    assert not holder.exists()


def test_file_lock_makes_a_second_holder_wait_and_says_whose_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(io, "LOCK_REPORT_S", 0.05)
    lock = tmp_path / "a.lock"
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with io.file_lock(lock):
            order.append("first in")
            inside.set()
            time.sleep(0.4)
            order.append("first out")

    thread = threading.Thread(target=first)
    with caplog.at_level(logging.INFO, logger="citylens"):
        thread.start()
        assert inside.wait(10)
        with io.file_lock(lock):
            order.append("second in")
        thread.join()
    assert order == ["first in", "first out", "second in"]
    text = caplog.text
    assert f"waiting for lock {lock} (held by pid {os.getpid()}" in text
    assert "still waiting for lock" in text
    assert "got lock" in text


def test_lock_holder_falls_back_when_the_file_is_missing_or_empty(tmp_path: Path):
    assert io._lock_holder(tmp_path / "none") == "another process"
    (tmp_path / "empty").write_text("  \n")
    assert io._lock_holder(tmp_path / "empty") == "another process"


# ---------------------------------------------------------------- ranges and the resumable array


@pytest.mark.parametrize(
    ("ranges", "merged"),
    [
        ([], []),
        ([(5, 8), (0, 2)], [[0, 2], [5, 8]]),
        ([(0, 2), (2, 4)], [[0, 4]]),  # touching ranges merge
        ([(0, 10), (3, 5)], [[0, 10]]),  # a contained range disappears
        ([(4, 6), (0, 5), (np.int64(8), 9.0)], [[0, 6], [8, 9]]),
    ],
)
def test_merge_ranges(ranges, merged):
    assert io.merge_ranges(ranges) == merged


def test_resumable_array_fill_then_open(tmp_path: Path):
    array = io.ResumableArray(tmp_path / "arr", (5, 2), "int16")
    calls = []

    def compute(start: int, stop: int) -> np.ndarray:
        calls.append((start, stop))
        return np.arange(start * 2, stop * 2).reshape(-1, 2)

    array.fill(compute, {"kind": "test"}, chunk=2)
    assert calls == [(0, 2), (2, 4), (4, 5)]
    data = array.open()
    assert data.dtype == np.int16 and data.shape == (5, 2)
    np.testing.assert_array_equal(data, np.arange(10).reshape(5, 2))
    assert array.is_complete() and array.metadata() == {"kind": "test"}
    assert array.done_ranges() == [[0, 5]]
    with pytest.raises(ValueError, match="read-only"):
        data[0, 0] = 1


def test_resumable_array_resumes_only_the_missing_ranges(tmp_path: Path):
    first = io.ResumableArray(tmp_path, (6,), "float32")
    first.begin()
    first.write(0, 2, [1, 2])
    first.write(4, 6, [5, 6])
    with pytest.raises(RuntimeError, match=r"rows \[\[0, 2\], \[4, 6\]\] of \[0, 6\)"):
        first.finish({})
    assert not first.is_complete()
    with pytest.raises(RuntimeError, match="incomplete"):
        first.open()

    second = io.ResumableArray(tmp_path, (6,), "float32")
    assert second.done_ranges() == [[0, 2], [4, 6]]
    calls = []

    def compute(start: int, stop: int) -> np.ndarray:
        calls.append((start, stop))
        return np.full(stop - start, -1.0)

    second.fill(compute, lambda: {"n": len(calls)}, chunk=2)
    assert calls == [(2, 4)]
    np.testing.assert_array_equal(second.open(), [1, 2, -1, -1, 5, 6])
    assert second.metadata() == {"n": 1}


def test_resumable_array_starts_afresh_for_another_shape_or_dtype(tmp_path: Path):
    old = io.ResumableArray(tmp_path, (4,), "int32")
    old.begin()
    old.write(0, 2, [7, 7])
    assert io.ResumableArray(tmp_path, (5,), "int32").recorded() == []  # another shape: nothing to resume

    other_dtype = io.ResumableArray(tmp_path, (4,), "int64")
    assert other_dtype.recorded() == [[0, 2, None]]  # same shape: the progress looks resumable...
    other_dtype.begin()  # ...but the file's dtype differs, so the build starts afresh
    assert not other_dtype.is_done(0, 2)
    assert not (tmp_path / "progress.json").exists()
    assert np.load(tmp_path / "data.npy").dtype == np.int64


def test_resumable_array_tags_and_overlapping_writes(tmp_path: Path):
    array = io.ResumableArray(tmp_path, (6,), "uint8")
    array.begin()
    array.write(0, 3, [1, 1, 1], tag="abc")
    assert array.is_done(0, 3, "abc") and not array.is_done(0, 3, "xyz") and not array.is_done(0, 2, "abc")
    array.write(2, 4, [2, 2], tag="def")  # overlaps [0, 3): that record goes
    assert array.recorded() == [[2, 4, "def"]]
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress == {"shape": [6], "chunks": [[2, 4, "def"]]}

    resumed = io.ResumableArray(tmp_path, (6,), "uint8")
    resumed.begin()
    assert resumed.is_done(2, 4, "def") and not resumed.is_done(0, 3, "abc")
    np.testing.assert_array_equal(np.load(tmp_path / "data.npy"), [1, 1, 2, 2, 0, 0])


def test_resumable_array_refuses_bad_writes(tmp_path: Path):
    array = io.ResumableArray(tmp_path, (4,), "uint8")
    with pytest.raises(RuntimeError, match="begin"):
        array.write(0, 1, [1])
    array.begin()
    for start, stop in ((-1, 2), (2, 5), (3, 3), (3, 2)):
        with pytest.raises(ValueError, match="outside"):
            array.write(start, stop, 0)


def test_resumable_array_ignores_progress_without_its_data(tmp_path: Path):
    array = io.ResumableArray(tmp_path, (2,), "uint8", name="other.npy")
    (tmp_path / "progress.json").write_text(json.dumps({"shape": [2], "chunks": [[0, 2, None]]}))
    assert array.recorded() == [] and array.done_ranges() == []


def test_an_empty_resumable_array_is_complete_at_once(tmp_path: Path):
    array = io.ResumableArray(tmp_path, (0, 3), "float32")
    array.fill(lambda a, b: pytest.fail("nothing to compute"), {"empty": True}, chunk=4)
    assert array.open().shape == (0, 3)
