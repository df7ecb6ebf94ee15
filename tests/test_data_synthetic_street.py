"""The objects on the sidewalk and the road: trees, poles, street lights, people, buses and cars
(citylens/data/synthetic/street.py). Each drawer is run alone on a canvas with the backdrop's layout."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.core.ade20k import class_index
from citylens.data.synthetic import street
from citylens.data.synthetic.canvas import Canvas, Layout

SEEDS = range(16)
SIZE = 96
DRAWERS = {
    "tree": street.draw_tree,
    "pole": street.draw_pole,
    "streetlight": street.draw_streetlight,
    "person": street.draw_person,
    "bus": street.draw_bus,
    "car": street.draw_car,
}


def _canvas(seed: int, night: bool = False) -> tuple[Canvas, Layout]:
    c = Canvas(np.random.default_rng(seed), SIZE, night)
    ground = c.px(0.5, 0.6)
    return c, Layout(ground, ground + c.px(0.1, 0.15), frozenset(DRAWERS))


def _rows(c: Canvas, name: str) -> np.ndarray:
    return np.flatnonzero((c.label == class_index(name)).any(axis=1))


@pytest.mark.parametrize("name", DRAWERS)
def test_each_drawer_draws_its_class_and_only_it(name):
    for seed in SEEDS:
        c, lay = _canvas(seed, night=seed % 2 == 1)
        DRAWERS[name](c, lay)
        assert set(np.unique(c.label)) == {class_index("sky"), class_index(name)}
        assert (c.label == class_index(name)).sum() >= 4


@pytest.mark.parametrize(("name", "below"), [("tree", 0), ("pole", 1), ("streetlight", 0)])
def test_sidewalk_objects_stand_on_the_sidewalk(name, below):
    for seed in SEEDS:
        c, lay = _canvas(seed)
        DRAWERS[name](c, lay)
        rows = _rows(c, name)
        assert rows.max() < lay.curb + below
        assert rows.max() >= lay.ground  # their foot is below the facades' base


def test_people_stand_between_the_middle_of_the_sidewalk_and_just_past_the_curb():
    for seed in SEEDS:
        c, lay = _canvas(seed)
        street.draw_person(c, lay)
        # Each person is one placed rect from head to feet.
        for person in c.placed:
            (x0, y0, x1, y1) = person.rects[0]
            assert (lay.ground + lay.curb) // 2 <= y1 <= lay.curb + c.px(0.02)
        assert 1 <= len(c.placed) <= 3
        assert _rows(c, "person").max() < lay.curb + c.px(0.02)


@pytest.mark.parametrize("name", ["bus", "car"])
def test_vehicles_stand_on_the_road(name):
    for seed in SEEDS:
        c, lay = _canvas(seed)
        DRAWERS[name](c, lay)
        rows = _rows(c, name)
        assert rows.max() <= SIZE - c.px(0.01)
        bottoms = [v.rects[0][3] for v in c.placed]
        assert all(b > lay.curb for b in bottoms)
        assert c.vehicle_floor == bottoms[-1]


def test_later_vehicles_stand_nearer():
    """A car drawn after a bus (in front of it) never stands farther away than the bus."""
    for seed in SEEDS:
        c, lay = _canvas(seed)
        street.draw_bus(c, lay)
        bus_bottom = c.vehicle_floor
        street.draw_car(c, lay)
        car_bottoms = [p.rects[0][3] for p in c.placed[1:]]
        assert car_bottoms and all(b >= bus_bottom for b in car_bottoms)
        assert car_bottoms == sorted(car_bottoms)


def test_cars_light_up_at_night_and_buses_have_lit_windows():
    for seed in SEEDS:
        c, lay = _canvas(seed, night=True)
        street.draw_car(c, lay)
        car = c.rgb()[0][c.label == class_index("car")]
        assert (car.min(axis=-1) >= 180).any()  # headlights: glow((255, 245, 200))
        b, lay = _canvas(seed, night=True)
        street.draw_bus(b, lay)
        bus = b.rgb()[0][b.label == class_index("bus")]
        assert ((bus[:, 0] >= 230) & (bus[:, 2] <= 190)).any()  # warm window light


def test_trees_have_a_canopy_wider_than_the_trunk():
    for seed in SEEDS:
        c, lay = _canvas(seed)
        street.draw_tree(c, lay)
        widths = (c.label == class_index("tree")).sum(axis=1)
        assert widths.max() >= 2 * c.px(0.08) - 2
        assert widths[_rows(c, "tree").max()] <= 2 * max(1, c.px(0.02)) * 2  # trunk(s) at the foot


def test_the_drawers_are_deterministic():
    for draw in DRAWERS.values():
        a, lay = _canvas(7)
        draw(a, lay)
        b, lay = _canvas(7)
        draw(b, lay)
        np.testing.assert_array_equal(a.rgb(), b.rgb())
        np.testing.assert_array_equal(a.label, b.label)
