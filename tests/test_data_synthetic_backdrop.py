"""The backdrop every scene shares: sky, skyline, facades with windows, sidewalk and road
(citylens/data/synthetic/backdrop.py)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.core.ade20k import class_index
from citylens.data.synthetic import backdrop
from citylens.data.synthetic.canvas import Canvas, Layout

SKY, BUILDING = class_index("sky"), class_index("building")
SIDEWALK, ROAD = class_index("sidewalk"), class_index("road")
SEEDS = range(12)


def _canvas(seed: int, size: int = 64, night: bool = False) -> tuple[Canvas, Layout]:
    c = Canvas(np.random.default_rng(seed), size, night)
    ground = c.px(0.5, 0.6)
    return c, Layout(ground, ground + c.px(0.1, 0.15), frozenset())


@pytest.mark.parametrize("night", [False, True])
def test_sky_is_a_vertical_gradient_above_the_ground(night):
    for seed in SEEDS:
        c, lay = _canvas(seed, night=night)
        backdrop.draw_sky(c, lay)
        rgb = c.rgb()[0].astype(int)
        assert (c.label == SKY).all()  # the sky paints colours, its label is the canvas's own
        assert not rgb[lay.ground :].any()
        assert (rgb[: lay.ground] == rgb[: lay.ground, :1]).all()  # each row one colour
        top, bottom = rgb[0, 0], rgb[lay.ground - 1, 0]
        assert bottom.sum() >= top.sum()  # lighter towards the horizon
        if night:
            assert rgb[: lay.ground].max() <= 66 + 8  # near-black blue: glow((40, 40, 66), 8) at most
        else:
            assert top.sum() > 150


def test_skyline_blocks_stand_between_the_roofs_and_the_ground():
    drawn = 0
    for seed in SEEDS:
        c, lay = _canvas(seed)
        backdrop.draw_sky(c, lay)
        backdrop.draw_skyline(c, lay)
        rows = np.flatnonzero((c.label == BUILDING).any(axis=1))
        if len(rows):
            drawn += 1
            assert rows.min() >= c.px(0.08) - 1 and rows.max() == lay.ground - 1
            # Hazy: half the sky's colour mixed in, so no block is black.
            assert c.rgb()[0][c.label == BUILDING].sum(axis=-1).min() > 0
    assert 0 < drawn < len(SEEDS)  # drawn in about 60% of the scenes


def test_facades_cover_the_row_above_the_ground_and_nothing_below():
    for seed in SEEDS:
        c, lay = _canvas(seed)
        backdrop.draw_facades(c, lay)
        building = c.label == BUILDING
        assert not building[lay.ground :].any()
        assert building[lay.ground - 1].mean() > 0.6  # gaps between buildings are rare and narrow
        assert building[: c.px(0.12) - 1].sum() == 0  # no roof above 12% of the height


def test_windows_are_a_centred_grid_inside_their_box():
    c, _ = _canvas(0, size=100)
    glass = np.array([1, 2, 3], np.uint8)
    backdrop.windows(c, (10, 20, 50, 70), "building", glass, 0.5)
    panes = (c.rgb()[0] == glass).all(-1)
    rows, cols = np.flatnonzero(panes.any(1)), np.flatnonzero(panes.any(0))
    assert rows.min() >= 20 and rows.max() < 70 and cols.min() >= 10 and cols.max() < 50
    assert (c.label[panes] == BUILDING).all() and panes.sum() < 40 * 50
    # Centred: the margins on both sides differ by at most one pixel.
    assert abs((rows.min() - 20) - (69 - rows.max())) <= 1 and abs((cols.min() - 10) - (49 - cols.max())) <= 1


def test_windows_in_a_box_too_small_draw_nothing_and_light_up_at_night():
    c, _ = _canvas(0, size=100)
    backdrop.windows(c, (10, 10, 12, 12), "building", np.array([9, 9, 9], np.uint8), 1.0)
    assert (c.label == SKY).all()
    lit = 0
    for seed in SEEDS:
        night, _ = _canvas(seed, size=100, night=True)
        backdrop.windows(night, (0, 0, 100, 100), "building", np.array([1, 1, 1], np.uint8), 0.5)
        rgb = night.rgb()[0]
        lit += int((rgb[..., 0] > 200).any())
        # Lit windows are a subset of the panes.
        assert ((rgb[..., 0] > 200) <= (night.label == BUILDING)).all()
    assert lit == len(SEEDS)


def test_ground_is_sidewalk_then_road_and_both_are_occludable():
    for seed in SEEDS:
        c, lay = _canvas(seed)
        backdrop.draw_ground(c, lay)
        assert (c.label[lay.ground : lay.curb] == SIDEWALK).all()
        assert (c.label[lay.curb :] == ROAD).all()
        assert (c.label[: lay.ground] == SKY).all()
        sidewalk, road = c.placed
        assert sidewalk.rects == [(0, lay.ground, c.size, lay.curb)] and sidewalk.limit == 0.85
        assert road.area == c.size * (c.size - lay.curb) and road.limit == 0.85
        # Lane markings: some road row holds a second, paint colour.
        road_rgb = c.rgb()[0][lay.curb :].reshape(-1, 3)
        assert len(np.unique(road_rgb, axis=0)) >= 2


def test_the_backdrop_is_deterministic_per_seed():
    def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
        c, lay = _canvas(seed)
        for step in (backdrop.draw_sky, backdrop.draw_skyline, backdrop.draw_facades, backdrop.draw_ground):
            step(c, lay)
        return c.rgb(), c.label

    (a, la), (b, lb) = draw(5), draw(5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(draw(6)[0], a)
