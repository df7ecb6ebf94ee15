"""The view cache: reused by a second data module, resumed when incomplete."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from citylens.data import FolderCityData


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
    assert third.cache.array.done_ranges() == [[0, 16]]
    third.setup()
    np.testing.assert_array_equal(np.array(third.cache.images()), views)
