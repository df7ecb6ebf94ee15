"""Reading a sweep's runs: all pairs' residuals streamed in one pass over the stores."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from citylens.analysis.residuals import residuals
from citylens.explain.store import MaskStore, open_store
from citylens.pipeline.runs import stream_residuals


def test_all_pairs_streaming_equals_pairwise(
    default_variant, make_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rng = np.random.default_rng(0)
    ids = [f"tokyo/{i}" for i in range(7)]
    stores = [
        open_store(
            default_variant.dir(
                make_run(tmp_path / f"r{k}", "simple", k, rng.random((7, 3, 3), np.float32), ids, size=16)
            )
        )
        for k in range(4)
    ]
    reads = []
    original = MaskStore.masks
    monkeypatch.setattr(
        MaskStore, "masks", lambda self, *a, **kw: reads.append(self.path) or original(self, *a, **kw)
    )
    streamed = stream_residuals(stores, ["r0", "r1", "r2", "r3"], chunk=3)
    assert len(reads) == 4 * 3 and all(reads.count(s.path) == 3 for s in stores)
    monkeypatch.undo()
    per_image = streamed.per_image()
    for (i, a), (j, b) in combinations(enumerate(stores), 2):
        expected = residuals(a.masks(), b.masks())
        np.testing.assert_allclose(per_image[(f"r{i}", f"r{j}")], expected, rtol=1e-6)
        assert streamed.average()[(f"r{i}", f"r{j}")] == pytest.approx(expected.mean(), rel=1e-6)
