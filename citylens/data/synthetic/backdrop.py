"""The backdrop every scene shares: sky, distant skyline, a row of facades with windows, sidewalk and road."""

from __future__ import annotations

import numpy as np

from citylens.data.synthetic.canvas import Canvas, Color, Layout, Placed, Rect, area, palette, shade
from citylens.data.synthetic.patterns import grid

FACADES = palette("c8beaa a55541 96969b e1ded4 bea88a 766c62 cda080 a0afa0 d7c878")


def draw_sky(c: Canvas, lay: Layout) -> None:
    """A vertical gradient; overcast days are grey, nights near-black blue."""
    if c.night:
        top, bottom = c.glow((10, 12, 32), 6), c.glow((40, 40, 66), 8)
    elif c.rng.random() < 0.25:
        top = bottom = c.tint((185, 188, 195), 12)
        bottom = np.minimum(255, bottom.astype(int) + 20).astype(np.uint8)
    else:
        top, bottom = c.tint((70, 125, 205), 15), c.tint((185, 210, 238), 10)
    t = np.linspace(0.0, 1.0, lay.ground)[:, None]
    rows = (top * (1 - t) + bottom * t).astype(np.uint32)
    c.pixels[:, : lay.ground] = (rows[:, 0] | rows[:, 1] << 8 | rows[:, 2] << 16)[:, None]


def draw_skyline(c: Canvas, lay: Layout) -> None:
    """Hazy distant blocks between the facades' roofs."""
    if c.rng.random() < 0.4:
        return
    sky = np.array([(int(c.pixels[0, lay.ground - 1, 0]) >> shift) & 255 for shift in (0, 8, 16)], float)
    x = -c.px(0.0, 0.1)
    while x < c.size:
        w = c.px(0.08, 0.22)
        haze = (np.asarray(c.pick(FACADES), float) * c.light * 0.5 + sky * 0.5).astype(np.uint8)
        c.rect(x, c.px(0.08, 0.32), x + w, lay.ground, haze, "building")
        x += w + c.px(0.0, 0.06)


def windows(c: Canvas, box: Rect, cls: str, glass: Color, lit_rate: float) -> None:
    """A centred grid of windows in the box; at night a random subset of them glows."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    period = (max(3, c.px(0.06, 0.1)), max(3, c.px(0.05, 0.09)))
    if h < period[0] or w < period[1]:
        return
    on = (
        max(1, round(period[0] * c.rng.uniform(0.45, 0.65))),
        max(1, round(period[1] * c.rng.uniform(0.45, 0.65))),
    )
    c.rect(x0, y0, x1, y1, glass, cls, grid(h, w, period, on, centre=True))
    if c.night:
        lit = grid(h, w, period, on, centre=True, rng=c.rng, rate=lit_rate)
        c.rect(x0, y0, x1, y1, c.glow((255, 214, 140), 25), cls, lit)


def draw_facades(c: Canvas, lay: Layout) -> None:
    """A row of buildings across the image, each with windows, a cornice and a dark ground floor."""
    x = -c.px(0.0, 0.15)
    while x < c.size:
        w, top = c.px(0.18, 0.4), c.px(0.12, 0.42)
        wall = c.tint(c.pick(FACADES))
        c.rect(x, top, x + w, lay.ground, wall, "building")
        c.rect(x, top, x + w, top + max(1, c.px(0.015)), shade(wall, 0.7), "building")
        shop = lay.ground - c.px(0.09, 0.12)
        glass = c.tint((55, 62, 72), 12)
        margin = c.px(0.02)
        windows(c, (x + margin, top + c.px(0.04), x + w - margin, shop - c.px(0.03)), "building", glass, 0.45)
        c.rect(x + margin, shop, x + w - margin, lay.ground, shade(glass, 0.8), "building")
        x += w + (c.px(0.02, 0.08) if c.rng.random() < 0.15 else 0)


def draw_ground(c: Canvas, lay: Layout) -> None:
    """Paved sidewalk with a curb, asphalt road with dashed lane markings; both registered as occludable."""
    c.rect(0, lay.ground, c.size, lay.curb, c.tint((172, 166, 156), 14), "sidewalk")
    joints = grid(lay.curb - lay.ground, c.size, (1, c.px(0.08, 0.12)), (1, 1))
    c.rect(0, lay.ground, c.size, lay.curb, c.tint((135, 130, 122), 8), "sidewalk", joints)
    c.rect(0, lay.curb - max(1, c.px(0.012)), c.size, lay.curb, c.tint((205, 202, 195), 8), "sidewalk")
    c.rect(0, lay.curb, c.size, c.size, c.tint((82, 82, 86), 10), "road")
    lane = lay.curb + round((c.size - lay.curb) * c.rng.uniform(0.45, 0.6))
    dash = c.px(0.1, 0.16)
    marks = grid(max(1, c.px(0.015)), c.size, (1, 2 * dash), (1, dash), (0, c.px(0.0, 0.2)))
    paint = c.tint((225, 205, 90), 10) if c.rng.random() < 0.3 else c.tint((228, 228, 224), 8)
    c.rect(0, lane, c.size, lane + marks.shape[0], paint, "road", marks)
    for rect in ((0, lay.ground, c.size, lay.curb), (0, lay.curb, c.size, c.size)):
        c.placed.append(Placed([rect], float(area(rect)), limit=0.85))
