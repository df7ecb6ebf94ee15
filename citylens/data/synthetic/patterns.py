"""Boolean masks of cells repeating on a grid: windows, pickets, joints, lane dashes, a sign's glyphs."""

from __future__ import annotations

import numpy as np


def _axis(n: int, period: int, on: int, centre: bool, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis of n pixels: which pixels lie in an `on`-long run repeating every `period`, and the run
    index of each pixel. Centred patterns hold as many whole runs as fit (none if not one does) and ignore
    `offset`; their margins at the two ends differ by at most one pixel, the odd one at the far end."""
    pos = np.arange(n) + offset
    if centre:
        runs = max(0, (n + period - on) // period)
        start = (n - (runs * period - (period - on))) // 2
        pos = np.arange(n) - start
        return (pos >= 0) & (pos % period < on) & (pos < runs * period), pos // period
    return pos % period < on, pos // period


def grid(
    h: int,
    w: int,
    period: tuple[int, int],
    on: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
    centre: bool = False,
    rng: np.random.Generator | None = None,
    rate: float = 1.0,
) -> np.ndarray:
    """Boolean (h, w) pattern of on-sized cells repeating every period pixels (windows, pickets, glyphs).

    The cells start at the top-left corner, shifted back by `offset`; with `centre`, only whole cells are
    drawn, centred (the offset is ignored; the bottom and right margins may be one pixel wider than the top
    and left ones). With `rng`, each cell is kept with probability `rate` (lit windows, the glyphs of a sign).
    """
    rows, row_cell = _axis(h, period[0], on[0], centre, offset[0])
    cols, col_cell = _axis(w, period[1], on[1], centre, offset[1])
    mask = rows[:, None] & cols[None, :]
    if rng is not None:
        keep = rng.random((h // period[0] + 3, w // period[1] + 3)) < rate
        mask &= keep[(row_cell % keep.shape[0])[:, None], (col_cell % keep.shape[1])[None, :]]
    return mask
