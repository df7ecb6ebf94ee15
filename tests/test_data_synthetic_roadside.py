"""The optional objects of the street's edge: towers, awnings, signs, lawns, earth banks, fences
(citylens/data/synthetic/roadside.py). Each drawer is run alone on a canvas with the backdrop's layout."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.core.ade20k import class_index
from citylens.data.synthetic import roadside
from citylens.data.synthetic.backdrop import draw_ground
from citylens.data.synthetic.canvas import Canvas, Layout, overlap

SEEDS = range(16)
SIZE = 96
DRAWERS = {
    "skyscraper": roadside.draw_skyscraper,
    "awning": roadside.draw_awning,
    "signboard": roadside.draw_signboard,
    "grass": roadside.draw_grass,
    "earth": roadside.draw_earth,
    "fence": roadside.draw_fence,
}


def _draw(
    name: str, seed: int, present: set[str] = frozenset(), night: bool = False
) -> tuple[Canvas, Layout]:
    c = Canvas(np.random.default_rng(seed), SIZE, night)
    ground = c.px(0.5, 0.6)
    lay = Layout(ground, ground + c.px(0.1, 0.15), frozenset(present) | {name})
    DRAWERS[name](c, lay)
    return c, lay


def _rows(c: Canvas, name: str) -> np.ndarray:
    return np.flatnonzero((c.label == class_index(name)).any(axis=1))


@pytest.mark.parametrize("name", DRAWERS)
def test_each_drawer_draws_its_class_and_only_it(name):
    for seed in SEEDS:
        c, _ = _draw(name, seed, night=seed % 2 == 1)
        assert set(np.unique(c.label)) == {class_index("sky"), class_index(name)}
        assert (c.label == class_index(name)).sum() >= 4
        assert len(c.placed) >= 1


@pytest.mark.parametrize("name", ["skyscraper", "awning", "signboard"])
def test_facade_objects_stay_above_the_ground(name):
    for seed in SEEDS:
        c, lay = _draw(name, seed)
        assert _rows(c, name).max() < lay.ground


def test_skyscrapers_reach_near_the_top():
    for seed in SEEDS:
        c, lay = _draw("skyscraper", seed)
        rows = _rows(c, "skyscraper")
        assert rows.min() <= c.px(0.08) and rows.max() == lay.ground - 1
        assert rows.max() - rows.min() + 1 >= lay.ground - c.px(0.08)


def test_lawns_and_fences_stand_on_the_sidewalk_band():
    for seed in SEEDS:
        grass, lay = _draw("grass", seed)
        rows = _rows(grass, "grass")
        assert rows.min() >= lay.ground and rows.max() < lay.curb
        # Either along the back (starting at the facades) or along the front (ending at the curb).
        assert rows.min() == lay.ground or rows.max() == lay.curb - 1
        fence, lay = _draw("fence", seed)
        rows = _rows(fence, "fence")
        band = lay.curb - lay.ground
        assert rows.max() < lay.ground + (3 * band) // 5 + 1 and rows.max() >= lay.ground + band // 4 - 1


def test_a_lawn_goes_to_the_front_when_an_earth_bank_takes_the_back():
    for seed in SEEDS:
        c, lay = _draw("grass", seed, present={"earth"})
        rows = _rows(c, "grass")
        assert rows.max() == lay.curb - 1
        assert rows.min() >= lay.ground + (lay.curb - lay.ground) // 2 - 1  # at most half the band deep


def test_earth_banks_rise_over_the_facades_base_down_to_the_curb():
    for seed in SEEDS:
        c, lay = _draw("earth", seed)
        rows = _rows(c, "earth")
        assert rows.max() == lay.curb - 1
        assert lay.ground - c.px(0.14) * 1.25 - 1 <= rows.min() < lay.ground


def test_earth_placement_leaves_room_for_a_lawn():
    for seed in SEEDS:
        c, lay = _draw("earth", seed, present={"grass"})
        (bank,) = c.placed
        assert bank.rects[0][3] == (lay.ground + lay.curb) // 2


def test_a_lawn_does_not_depend_on_what_else_is_present():
    """Counterfactual scenes rely on it: an object's shape never depends on the other objects."""
    for seed in SEEDS:
        alone, _ = _draw("grass", seed)
        beside, _ = _draw("grass", seed, present={"fence", "signboard"})
        np.testing.assert_array_equal(alone.label, beside.label)


def test_fences_are_see_through_to_the_placement():
    # A fence is placed with opacity 0.6: it hides less of what is behind it than a solid object would.
    for seed in SEEDS:
        c = Canvas(np.random.default_rng(seed), SIZE, False)
        ground = c.px(0.5, 0.6)
        lay = Layout(ground, ground + c.px(0.1, 0.15), frozenset({"fence"}))
        draw_ground(c, lay)
        roadside.draw_fence(c, lay)
        sidewalk, road, fence = c.placed
        hidden = overlap(fence.rects, sidewalk.rects)
        assert hidden > 0 and sidewalk.covered == pytest.approx(0.6 * hidden)
        assert road.covered == pytest.approx(0.6 * overlap(fence.rects, road.rects))


def test_signs_carry_glyphs_of_another_colour():
    for seed in SEEDS:
        c, _ = _draw("signboard", seed)
        sign = c.label == class_index("signboard")
        colours = np.unique(c.rgb()[0][sign], axis=0)
        assert len(colours) >= 2  # border and face at least, glyphs on the larger signs


def test_the_drawers_are_deterministic():
    for name in DRAWERS:
        a, _ = _draw(name, 3)
        b, _ = _draw(name, 3)
        np.testing.assert_array_equal(a.rgb(), b.rgb())
