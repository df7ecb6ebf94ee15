"""Boolean masks of cells repeating on a grid (citylens/data/synthetic/patterns.py)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.data.synthetic.patterns import _axis, grid


def _runs(line: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True pixels along a line."""
    padded = np.r_[0, line.astype(int), 0]
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_grid_repeats_cells_from_the_corner():
    mask = grid(5, 7, (2, 3), (1, 2))
    expected = np.zeros((5, 7), bool)
    expected[0::2, :] = [True, True, False, True, True, False, True]
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == bool


def test_grid_offset_shifts_the_pattern_back():
    shifted = grid(4, 6, (2, 3), (1, 1), offset=(1, 2))
    wide = grid(5, 8, (2, 3), (1, 1))
    np.testing.assert_array_equal(shifted, wide[1:, 2:])


@pytest.mark.parametrize(
    ("n", "period", "on"), [(10, 4, 2), (11, 4, 2), (9, 3, 1), (20, 6, 3), (17, 5, 4), (8, 8, 3)]
)
def test_centred_patterns_hold_whole_runs_with_margins_at_most_one_pixel_apart(n, period, on):
    line, cell = _axis(n, period, on, centre=True)
    runs = _runs(line)
    assert runs and all(stop - start == on for start, stop in runs)  # only whole runs
    assert all(b[0] - a[0] == period for a, b in zip(runs, runs[1:]))
    assert len(runs) == (n - on) // period + 1  # as many as fit
    left, right = runs[0][0], n - runs[-1][1]
    assert right - left in (0, 1)  # the odd pixel, if any, goes to the far end
    assert cell[line].tolist() == [i for i, (a, b) in enumerate(runs) for _ in range(a, b)]


def test_centred_examples_by_hand():
    np.testing.assert_array_equal(_axis(10, 4, 2, True)[0], [1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(_axis(11, 4, 2, True)[0], [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(_axis(9, 3, 1, True)[0], [0, 1, 0, 0, 1, 0, 0, 1, 0])
    # Too short for one whole run: nothing.
    assert not _axis(3, 5, 4, True)[0].any()
    assert not grid(3, 3, (5, 5), (4, 4), centre=True).any()


def test_a_centred_grid_ignores_the_offset():
    np.testing.assert_array_equal(
        grid(9, 11, (3, 4), (1, 2), offset=(1, 3), centre=True), grid(9, 11, (3, 4), (1, 2), centre=True)
    )


def test_rate_keeps_or_drops_whole_cells():
    base = grid(40, 60, (4, 6), (2, 3))
    assert not grid(40, 60, (4, 6), (2, 3), rng=np.random.default_rng(0), rate=0.0).any()
    np.testing.assert_array_equal(grid(40, 60, (4, 6), (2, 3), rng=np.random.default_rng(0), rate=1.0), base)
    half = grid(40, 60, (4, 6), (2, 3), rng=np.random.default_rng(0), rate=0.5)
    assert not (half & ~base).any()
    cells = half.reshape(10, 4, 10, 6)[:, :2, :, :3]  # the on-part of each of the 10 x 10 cells
    whole = cells.all(axis=(1, 3))
    assert (whole == cells.any(axis=(1, 3))).all()  # each cell is lit whole or not at all
    assert 30 <= whole.sum() <= 70
    again = grid(40, 60, (4, 6), (2, 3), rng=np.random.default_rng(0), rate=0.5)
    np.testing.assert_array_equal(half, again)


def test_rate_on_a_centred_grid_with_a_left_margin():
    # Cells left of the first whole run have index -1: they must not break the indexing.
    mask = grid(9, 9, (3, 3), (1, 1), centre=True, rng=np.random.default_rng(1), rate=0.5)
    assert not (mask & ~grid(9, 9, (3, 3), (1, 1), centre=True)).any()
