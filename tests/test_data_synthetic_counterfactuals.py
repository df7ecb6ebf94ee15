"""The counterfactual render cache: the views the renderer gives, rendered once, resumed after a SIGKILL,
never read for another dataset or other removal sets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from citylens.data.synthetic import SyntheticCities, ensure_synthetic
from citylens.data.synthetic.counterfactuals import (
    CHUNK_IMAGES,
    CounterfactualCache,
    as_view,
    single_removals,
)

SIZE = 32
CITIES = {"a": {"planted": {"signboard": 0.9}}, "b": {"planted": {"fence": 0.9}}}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCities:
    root = ensure_synthetic(
        tmp_path_factory.mktemp("synthetic"), progress=False, cities=CITIES, images_per_city=50, size=SIZE
    )
    return SyntheticCities(root)


def _ids(scenes: SyntheticCities) -> list[str]:
    return sorted(scenes.index)


def test_views_are_the_renderers_and_a_second_build_renders_nothing(
    scenes: SyntheticCities, tmp_path: Path, renders: list[str]
) -> None:
    ids = _ids(scenes)[:12]
    # Single removals plus a coalition and the unchanged image (the empty removal set) on the first image.
    requests = single_removals(scenes, ids)
    present = scenes.contents(ids[0])[0]
    requests[0] = (ids[0], (frozenset(present), frozenset()))
    cache = CounterfactualCache(tmp_path, "fp", SIZE, requests)
    cache.build(scenes.root, progress=False)
    assert renders == [i for i, removals in requests if removals]
    got = list(cache.views())
    assert [(i, r) for i, r, _ in got] == requests
    for image_id, removals, views in got:
        assert views.shape == (len(removals), SIZE, SIZE, 3)
        for removal, view in zip(removals, views):
            assert np.array_equal(view, as_view(scenes.render(image_id, removal)[0], SIZE))
    assert np.array_equal(got[0][2][1], as_view(scenes.render(ids[0])[0], SIZE))
    assert not np.array_equal(got[0][2][0], got[0][2][1])  # the coalition removed something visible

    renders.clear()
    again = CounterfactualCache(tmp_path, "fp", SIZE, requests)
    again.build(scenes.root, progress=False)
    assert renders == [] and again.dir == cache.dir
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(got, again.views()))
    # Other removal sets or another dataset: another cache, not this one's views.
    others = [CounterfactualCache(tmp_path, "fp", SIZE, single_removals(scenes, ids)),
              CounterfactualCache(tmp_path, "other", SIZE, requests)]  # fmt: skip
    assert all(o.dir != cache.dir and not o.is_complete() for o in others)


def test_a_cache_of_another_dataset_is_refused_naming_the_file(
    scenes: SyntheticCities, tmp_path: Path
) -> None:
    requests = single_removals(scenes, _ids(scenes)[:3])
    cache = CounterfactualCache(tmp_path, "fp", SIZE, requests)
    with pytest.raises(RuntimeError, match="incomplete"):
        cache.open()
    cache.build(scenes.root, progress=False)
    manifest = json.loads(cache.array.complete_path.read_text())
    manifest["key"]["dataset"] = "another"  # e.g. a cache folder copied in from other data
    cache.array.complete_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"complete\.json: dataset fingerprint 'another', this data's 'fp'"):
        next(cache.views())


def test_no_views_at_all_is_a_complete_cache(scenes: SyntheticCities, tmp_path: Path) -> None:
    cache = CounterfactualCache(tmp_path, "fp", SIZE, [(_ids(scenes)[0], ())])
    cache.build(scenes.root, progress=False)
    assert [(i, r, v.shape) for i, r, v in cache.views()] == [(_ids(scenes)[0], (), (0, SIZE, SIZE, 3))]


BUILD = """
import sys
from citylens.data.synthetic import SyntheticCities
from citylens.data.synthetic.counterfactuals import CounterfactualCache, single_removals
scenes = SyntheticCities(sys.argv[1])
requests = single_removals(scenes, sorted(scenes.index))
CounterfactualCache(sys.argv[2], "fp", int(sys.argv[3]), requests).build(scenes.root, progress=False)
"""


def test_a_killed_build_resumes_after_its_finished_chunks(
    scenes: SyntheticCities, tmp_path: Path, renders: list[str]
) -> None:
    ids = _ids(scenes)
    assert len(ids) > 3 * CHUNK_IMAGES
    env = {**os.environ, "CITYLENS_KILL_AT": "cache_chunk", "CITYLENS_KILL_AFTER": "1"}
    args = [sys.executable, "-c", BUILD, str(scenes.root), str(tmp_path / "killed"), str(SIZE)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]

    requests = single_removals(scenes, ids)
    cache = CounterfactualCache(tmp_path / "killed", "fp", SIZE, requests)
    assert not cache.is_complete()
    assert cache.array.done_ranges() == [[0, int(cache.offsets[2 * CHUNK_IMAGES])]]  # two chunks written
    cache.build(scenes.root, progress=False)
    assert renders == [i for i, removals in requests[2 * CHUNK_IMAGES :] if removals]

    fresh = CounterfactualCache(tmp_path / "fresh", "fp", SIZE, requests)
    fresh.build(scenes.root, workers=2, progress=False)
    assert np.array_equal(cache.open(), fresh.open())
