"""The optional objects of the street's edge, behind its furniture: glass towers, awnings, shop signs,
lawns, earth banks and fences.

Each drawer proposes placements (`sample`) and paints the chosen one (`paint`); `Canvas.populate` places them
so that nearer objects hide little of farther ones.
"""

from __future__ import annotations

import numpy as np

from citylens.data.synthetic.backdrop import windows
from citylens.data.synthetic.canvas import Canvas, Layout, palette, shade, up_to
from citylens.data.synthetic.patterns import grid

_GLASS = palette("5c7c98 6e8ea2 465c70 96acba 566e64")
_BRIGHT = palette("e12828 f5cd28 f2f2ec 285acd 28a050 fa821e c828a0")


def draw_skyscraper(c: Canvas, lay: Layout) -> None:
    """A tall glass tower reaching (nearly) the top of the image, with mullions and floor bands."""

    def sample():
        w = c.px(0.2, 0.3)
        x, top = c.left_edge(w, 4), c.px(0.0, 0.08)
        return (x, w, top), [(x, top, x + w, lay.ground)]

    def paint(x: int, w: int, top: int) -> None:
        glass = c.tint(c.pick(_GLASS), 14)
        c.rect(x, top, x + w, lay.ground, glass, "skyscraper")
        crown = c.px(0.03, 0.06)
        c.rect(x + crown, top - crown, x + w - crown, top, shade(glass, 0.8), "skyscraper")
        h = lay.ground - top
        mullion = grid(h, w, (1, max(3, c.px(0.03, 0.045))), (1, 1)) | grid(
            h, w, (max(3, c.px(0.035)), 1), (1, 1)
        )
        frame = np.clip(glass.astype(int) + 45, 0, 255).astype(np.uint8)
        c.rect(x, top, x + w, lay.ground, frame, "skyscraper", mullion)
        if c.night:
            windows(c, (x + 1, top + 1, x + w - 1, lay.ground), "skyscraper", shade(glass, 0.5), 0.6)

    c.populate(sample, paint)


def draw_awning(c: Canvas, lay: Layout) -> None:
    """A striped shop awning over the ground floor, sloping outwards."""

    def sample():
        w, h = c.px(0.2, 0.34), c.px(0.06, 0.09)
        x, y = c.left_edge(w, 5), lay.ground - c.px(0.15, 0.2)
        return (x, y, w, h), [(x, y, x + w, y + h)]

    def paint(x: int, y: int, w: int, h: int) -> None:
        slope = max(1, round(0.08 * w))
        top, bottom = (x + slope, x + w - slope), (x, x + w)
        c.trapezoid(y, y + h, top, bottom, c.tint((240, 240, 235), 10), "awning")
        stripe = max(2, round(w / c.rng.integers(5, 9)))
        c.trapezoid(y, y + h, top, bottom, c.tint(c.pick(_BRIGHT[:6]), 15), "awning", stripe=stripe)

    c.populate(sample, paint)


def draw_signboard(c: Canvas, lay: Layout) -> None:
    """One to three shop signs on the facades: tall (Tokyo-style) or wide, bright, with glyph blocks."""

    def sample():
        if c.rng.random() < 0.5:
            w, h = c.px(0.11, 0.16), c.px(0.27, 0.36)
        else:
            w, h = c.px(0.28, 0.42), c.px(0.1, 0.14)
        top_max = max(c.px(0.06), lay.ground - c.px(0.14) - h)
        x, y = c.left_edge(w, 6), int(c.rng.integers(c.px(0.06), top_max + 1))
        return (x, y, w, h), [(x, y, x + w, y + h)]

    def paint(x: int, y: int, w: int, h: int) -> None:
        color = c.pick(_BRIGHT)
        face = c.glow(color, 15) if c.night else c.tint(color, 15)
        c.rect(x, y, x + w, y + h, shade(face, 0.55), "signboard")
        border = max(1, round(0.08 * min(w, h)))
        c.rect(x + border, y + border, x + w - border, y + h - border, face, "signboard")
        gh, gw = h - 4 * border, w - 4 * border
        cell = max(2, round(0.6 * min(gh, gw)) if h > w else round(0.7 * gh))
        if gh >= 2 and gw >= 2:
            period = cell + max(1, cell // 3)
            glyphs = grid(gh, gw, (period, period), (cell, cell), centre=True, rng=c.rng, rate=0.85)
            ink = (30, 30, 30) if color in ((245, 205, 40), (242, 242, 236)) else (250, 250, 245)
            gx, gy = x + 2 * border, y + 2 * border
            c.rect(gx, gy, gx + gw, gy + gh, c.tint(ink, 10), "signboard", glyphs)

    c.populate(sample, paint, up_to(2))


def draw_grass(c: Canvas, lay: Layout) -> None:
    """A lawn strip along the front or back of the sidewalk (the front when an earth bank takes the back)."""
    coin = c.rng.random() < 0.5  # drawn always, so the lawn's random stream ignores what else is present
    front = "earth" in lay.present or coin
    deepest = 0.5 if "earth" in lay.present else 0.75

    def sample():
        w, h = c.px(0.35, 0.75), max(2, round((lay.curb - lay.ground) * c.rng.uniform(0.45, deepest)))
        x = c.left_edge(w, 4)
        y = lay.curb - h if front else lay.ground
        return (x, y, w, h), [(x, y, x + w, y + h)]

    def paint(x: int, y: int, w: int, h: int) -> None:
        c.rect(x, y, x + w, y + h, c.tint((78, 135, 52), 16), "grass")
        tufts = grid(h, w, (2, 3), (1, 1), (0, int(c.rng.integers(3))))
        c.rect(x, y, x + w, y + h, c.tint((58, 105, 40), 10), "grass", tufts)

    c.populate(sample, paint)


def draw_earth(c: Canvas, lay: Layout) -> None:
    """A bare earth bank (Pittsburgh's hillsides) rising over the facades' base down to the curb."""
    bottom = (lay.ground + lay.curb) // 2 if "grass" in lay.present else lay.curb

    def sample():
        w = c.px(0.35, 0.65)
        x, rise = c.left_edge(w, 4), c.px(0.06, 0.14)
        return (x, w, rise), [(x, lay.ground - rise // 2, x + w, bottom)]

    def paint(x: int, w: int, rise: int) -> None:
        t = (np.arange(w) + 0.5) / w
        phase, waves = c.rng.uniform(0, 2 * np.pi), c.rng.uniform(2, 5)
        height = rise * np.sin(np.pi * t) ** 0.6 + 0.25 * rise * np.sin(waves * np.pi * t + phase)
        tops = lay.ground - np.maximum(height, 0).round().astype(int)
        y0 = int(tops.min())
        ys = np.arange(y0, lay.curb)[:, None]
        soil = c.tint(c.pick([(132, 100, 70), (152, 118, 82), (112, 86, 60), (160, 128, 96)]), 12)
        c.rect(x, y0, x + w, lay.curb, soil, "earth", ys >= tops[None, :])
        strata = (ys >= tops[None, :] + 2) & (((ys + (np.arange(w)[None, :] // 5)) % 5) == 0)
        c.rect(x, y0, x + w, lay.curb, shade(soil, 0.78), "earth", strata)

    c.populate(sample, paint)


def draw_fence(c: Canvas, lay: Layout) -> None:
    """A picket fence or railing along the back of the sidewalk; furniture and people stand in front."""

    def sample():
        w, h, band = c.px(0.45, 0.9), c.px(0.12, 0.17), lay.curb - lay.ground
        x = c.left_edge(w, 5)
        base = int(c.rng.integers(lay.ground + band // 4, lay.ground + (3 * band) // 5 + 1))
        return (x, base - h, w, h), [(x, base - h, x + w, base)]

    def paint(x: int, y: int, w: int, h: int) -> None:
        period = max(3, c.px(0.03, 0.045))
        rail = max(1, round(0.14 * h))
        if c.rng.random() < 0.5:
            mask = grid(h, w, (1, period), (1, max(2, round(0.55 * period))))
            mask[round(0.2 * h) : round(0.2 * h) + rail] = True
            mask[round(0.7 * h) : round(0.7 * h) + rail] = True
            color = c.pick([(235, 235, 228), (150, 110, 75), (90, 125, 85)])
        else:
            mask = grid(h, w, (1, period), (1, max(1, round(0.3 * period))))
            mask[:rail] = True
            mask[h - rail :] = True
            mask |= grid(h, w, (1, 4 * period), (1, max(2, round(0.5 * period))))
            color = c.pick([(170, 175, 180), (60, 110, 80), (215, 205, 60), (110, 110, 120)])
        c.rect(x, y, x + w, y + h, c.tint(color, 12), "fence", mask)

    c.populate(sample, paint, opacity=0.6)
