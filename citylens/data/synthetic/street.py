"""The optional objects that stand on the sidewalk and the road: trees, poles, street lights, people, buses
and cars (drawn in that order, back to front, after the street's edge).

Each drawer proposes placements (`sample`) and paints the chosen one (`paint`); `Canvas.populate` places them
so that nearer objects hide little of farther ones.
"""

from __future__ import annotations

from collections.abc import Callable

from citylens.data.synthetic.canvas import Canvas, Extras, Layout, maybe_one, palette, shade, up_to
from citylens.data.synthetic.patterns import grid

_CLOTHES = palette("28282d c82828 2846a0 e6e6e1 5a783c 96785a 783c8c ebc83c")
_SKIN = palette("f0c8aa c8966e 8c5f41 5f412d")
_VEHICLE = palette("c81e1e ebebeb 1e1e23 969ba0 284696 dcbe28 3c6e46 781e28")


def draw_tree(c: Canvas, lay: Layout) -> None:
    """A street tree, sometimes two: trunk on the sidewalk and a two-lobed canopy."""

    def sample():
        base, trunk = int(c.rng.integers(lay.ground + c.px(0.01), lay.curb)), c.px(0.15, 0.24)
        rx, ry, x = c.px(0.08, 0.14), c.px(0.09, 0.14), int(c.rng.integers(0, c.size))
        cy = base - trunk
        return (x, base, trunk, rx, ry), [(x - rx, cy - ry, x + rx, cy + ry), (x - 2, cy, x + 2, base)]

    def paint(x: int, base: int, trunk: int, rx: int, ry: int) -> None:
        half = max(1, c.px(0.012, 0.02))
        c.rect(x - half, base - trunk, x + half, base, c.tint((92, 68, 48), 12), "tree")
        leaf = c.tint(c.pick([(60, 110, 45), (85, 130, 50), (45, 90, 50), (110, 135, 60)]), 14)
        cy = base - trunk
        c.ellipse(x, cy, rx, ry, leaf, "tree")
        shift = c.rng.choice([-1, 1]) * rx * 0.45
        c.ellipse(x + shift, cy - ry * 0.35, rx * 0.7, ry * 0.7, shade(leaf, 1.15), "tree")

    c.populate(sample, paint, maybe_one(0.4))


def draw_pole(c: Canvas, lay: Layout) -> None:
    """A plain utility or sign pole, sometimes two."""

    def sample():
        base, x = int(c.rng.integers(lay.ground + c.px(0.01), lay.curb + 1)), int(c.rng.integers(0, c.size))
        top, half = c.px(0.1, 0.3), max(1, c.px(0.01))
        return (x, top, base, half), [(x - half, top, x + half, base)]

    def paint(x: int, top: int, base: int, half: int) -> None:
        color = c.tint(c.pick([(120, 120, 125), (70, 85, 70), (150, 140, 120)]), 12)
        c.rect(x - half, top, x + half, base, color, "pole")
        c.rect(x - half - 1, top, x + half + 1, top + max(1, c.px(0.012)), color, "pole")

    c.populate(sample, paint, maybe_one(0.4))


def draw_streetlight(c: Canvas, lay: Layout) -> None:
    """A lamp post at the curb with an arm and a lamp head that glows at night."""

    def sample():
        x, top, arm = int(c.rng.integers(0, c.size)), c.px(0.12, 0.25), c.px(0.08, 0.13)
        side = 1 if c.rng.random() < 0.5 else -1
        base = lay.curb - c.px(0.0, 0.02)
        return (x, top, arm, side, base), [(min(x, x + side * arm), top, max(x, x + side * arm) + 2, base)]

    def paint(x: int, top: int, arm: int, side: int, base: int) -> None:
        half, bar = max(1, c.px(0.01)), max(1, c.px(0.012))
        metal = c.tint((60, 65, 70), 10)
        c.rect(x - half, top, x + half, base, metal, "streetlight")
        end = x + side * arm
        c.rect(min(x, end), top, max(x, end) + half, top + bar, metal, "streetlight")
        lamp = c.glow((255, 238, 170), 10) if c.night else c.tint((215, 215, 205), 10)
        lw, lh = c.px(0.06), max(2, c.px(0.025))
        c.rect(end - lw // 2, top, end + lw // 2 + 1, top + lh, lamp, "streetlight")

    c.populate(sample, paint, opacity=0.4)


def draw_person(c: Canvas, lay: Layout) -> None:
    """One to three pedestrians on the sidewalk: head, torso and two legs."""

    def sample():
        h = c.px(0.16, 0.26)
        feet = int(c.rng.integers((lay.ground + lay.curb) // 2, lay.curb + c.px(0.02) + 1))
        x = int(c.rng.integers(0, c.size))
        w = max(3, round(0.3 * h))
        return (x, feet, h, w), [(x - w // 2, feet - h, x + w // 2 + 1, feet)]

    def paint(x: int, feet: int, h: int, w: int) -> None:
        top = feet - h
        c.ellipse(x + 0.5, top + 0.1 * h, 0.17 * w + 0.6, 0.1 * h + 0.5, c.tint(c.pick(_SKIN), 10), "person")
        torso = c.tint(c.pick(_CLOTHES))
        c.rect(x - w // 2, top + round(0.2 * h), x + w // 2 + 1, top + round(0.6 * h), torso, "person")
        leg, legs = max(1, round(0.18 * w)), c.tint(c.pick(_CLOTHES[:3] + _CLOTHES[5:6]))
        for lx in (x - w // 2 + round(0.15 * w), x + w // 2 + 1 - round(0.15 * w) - leg):
            c.rect(lx, top + round(0.58 * h), lx + leg, feet, legs, "person")

    c.populate(sample, paint, up_to(2))


def _vehicles(
    c: Canvas,
    lay: Layout,
    width: tuple[float, float],
    height: tuple[float, float],
    paint: Callable[[int, int, int, int], None],
    extras: Extras | None = None,
) -> None:
    """Place and paint vehicles (x, bottom, w, h) of a size range on the road, each no farther away than the
    vehicles drawn before (behind) it."""

    def sample():
        w, h = c.px(*width), c.px(*height)
        x = c.left_edge(w, 5)
        high = c.size - c.px(0.01)
        low = max(c.vehicle_floor, lay.curb + max(h // 3, round(0.25 * (c.size - lay.curb))))
        bottom = int(c.rng.integers(min(low, high), high + 1))
        return (x, bottom, w, h), [(x, bottom - h, x + w, bottom)]

    def park(x: int, bottom: int, w: int, h: int) -> None:
        c.vehicle_floor = bottom
        paint(x, bottom, w, h)

    c.populate(sample, park, extras)


def _wheels(c: Canvas, x: int, w: int, bottom: int, r: float, cls: str) -> None:
    for cx in (x + 0.2 * w, x + 0.8 * w):
        c.ellipse(cx, bottom - r, r, r, c.tint((25, 25, 28), 6), cls)
        c.ellipse(cx, bottom - r, r * 0.45, r * 0.45, c.tint((150, 150, 155), 10), cls)


def draw_bus(c: Canvas, lay: Layout) -> None:
    """A city bus in side view: body, a band of windows (lit at night), a door and wheels."""

    def paint(x: int, bottom: int, w: int, h: int) -> None:
        top, r = bottom - h, 0.12 * h
        body = c.tint(
            c.pick([(40, 120, 70), (235, 235, 230), (40, 80, 170), (230, 140, 30), (200, 40, 40)]), 12
        )
        c.rect(x, top, x + w, bottom - round(r), body, "bus")
        band_top, band_h = top + round(0.12 * h), round(0.32 * h)
        pane = grid(band_h, w - 2, (1, max(3, round(0.12 * w))), (1, max(2, round(0.1 * w))), centre=True)
        glass = c.glow((250, 230, 170), 15) if c.night else c.tint((50, 60, 75), 10)
        c.rect(x + 1, band_top, x + w - 1, band_top + band_h, glass, "bus", pane)
        door = x + round(0.08 * w)
        c.rect(door, band_top, door + round(0.08 * w), bottom - round(r), c.tint((45, 50, 60), 8), "bus")
        _wheels(c, x, w, bottom, r * 1.3, "bus")

    _vehicles(c, lay, (0.42, 0.55), (0.26, 0.32), paint)


def draw_car(c: Canvas, lay: Layout) -> None:
    """One or two cars in side view: body, a cabin with tinted windows, wheels, and headlights at night."""

    def paint(x: int, bottom: int, w: int, h: int) -> None:
        top, r = bottom - h, 0.17 * h
        body = c.tint(c.pick(_VEHICLE), 14)
        cabin = top + round(0.45 * h)
        c.trapezoid(top, cabin, (x + 0.28 * w, x + 0.72 * w), (x + 0.12 * w, x + 0.9 * w), body, "car")
        c.trapezoid(
            top + max(1, round(0.08 * h)),
            cabin,
            (x + 0.32 * w, x + 0.68 * w),
            (x + 0.2 * w, x + 0.82 * w),
            c.tint((45, 55, 70), 10),
            "car",
        )
        c.rect(x, cabin, x + w, bottom - round(r), body, "car")
        if c.night:
            lamp = c.glow((255, 245, 200))
            c.rect(
                x + w - max(2, round(0.06 * w)),
                cabin + 1,
                x + w,
                cabin + max(2, round(0.15 * h)),
                lamp,
                "car",
            )
        _wheels(c, x, w, bottom, r * 1.25, "car")

    _vehicles(c, lay, (0.26, 0.36), (0.13, 0.18), paint, maybe_one(0.35))
