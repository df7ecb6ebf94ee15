"""Synthetic cities: street scenes from one shared grammar, with exact ADE20K label maps.

Every city is drawn by the same scene grammar (sky, facades, sidewalk, road and optional street furniture);
cities differ only in the probability of a few "planted" classes. A classifier can therefore only tell the
cities apart by the planted objects, which gives the analysis a known ground truth: the object ratios of a
working pipeline must single out the planted classes. The defaults plant what the paper found (Shi et al.
2019): signboards and fences in Tokyo, skyscrapers and earth in Pittsburgh.

Scenes are drawn with NumPy slicing and masks on a packed-RGBX canvas (no per-pixel Python), so one core
renders and encodes about 400 224x224 images a second. Optional objects are placed so that nearer ones hide
little of them, and a layout that hid a present class is redrawn: "the image contains p" and "the label map
contains p" are the same event, which the planted-frequency statistics rely on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from citylens.segment.ade20k import class_index

GENERATOR_VERSION = 1
JPEG_QUALITY = 90

ALWAYS_DRAWN: tuple[str, ...] = ("sky", "building", "road", "sidewalk")

# Probability that an image of any city contains the class when no city plants it.
BASE_RATES: dict[str, float] = {
    "skyscraper": 0.15,
    "awning": 0.3,
    "signboard": 0.25,
    "grass": 0.3,
    "earth": 0.15,
    "fence": 0.2,
    "tree": 0.6,
    "pole": 0.5,
    "streetlight": 0.4,
    "person": 0.5,
    "bus": 0.15,
    "car": 0.5,
}
# Back-to-front drawing order of the optional classes (the keys above are in this order).
OPTIONAL: tuple[str, ...] = tuple(BASE_RATES)

DEFAULT_CITIES: dict[str, dict[str, float]] = {
    "tokyo": {"signboard": 0.9, "fence": 0.9},
    "pittsburgh": {"skyscraper": 0.9, "earth": 0.9},
}

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive
Color = np.ndarray  # (3,) uint8

_ID = {name: class_index(name) for name in ALWAYS_DRAWN + OPTIONAL}
_CITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def renderable_classes() -> tuple[str, ...]:
    """ADE20K class names the generator can draw: the always-drawn ones, then the optional ones."""
    return ALWAYS_DRAWN + OPTIONAL


# --------------------------------------------------------------------------------------------- config


def normalize_cities(cities: Mapping[str, Any], where: str = "data.cities") -> dict[str, dict[str, float]]:
    """Validate a city -> {class: probability} config and return it as plain dicts of floats.

    A city's value may also be {"planted": {class: probability}} (the config file's shape); errors name the
    offending key as it is spelled in the config, e.g. `data.cities.tokyo.planted.spaceship`.
    """
    if not isinstance(cities, Mapping) or len(cities) < 2:
        raise ValueError(f"{where}: need at least two cities, got {list(cities or [])}")
    result: dict[str, dict[str, float]] = {}
    for city, planted in cities.items():
        key = f"{where}.{city}"
        if not isinstance(city, str) or not _CITY_NAME.fullmatch(city):
            raise ValueError(f"{key}: a city name must be a plain file name ([A-Za-z0-9_.-])")
        if isinstance(planted, Mapping) and "planted" in planted:
            planted, key = planted["planted"], f"{key}.planted"
        if planted is None:
            planted = {}
        if not isinstance(planted, Mapping):
            raise ValueError(f"{key}: expected a mapping of class name -> probability, got {planted!r}")
        result[city] = {name: _probability(f"{key}.{name}", name, p) for name, p in planted.items()}
    return result


def _probability(key: str, name: str, value: Any) -> float:
    """Check one planted entry: a plantable class and a probability in [0, 1]."""
    if name in ALWAYS_DRAWN:
        raise ValueError(f"{key}: always drawn, cannot be planted; plantable: {list(OPTIONAL)}")
    if name not in OPTIONAL:
        raise ValueError(f"{key}: not a renderable class; renderable: {list(renderable_classes())}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{key}: probability must be a number in [0, 1], got {value!r}")
    return float(value)


def city_probabilities(
    cities: Mapping[str, Mapping[str, float]], other_city_rate: float = 0.1
) -> dict[str, dict[str, float]]:
    """Per city, the probability of every optional class.

    A class planted in any city leaves the shared grammar: it appears with the planted probability where it
    is planted and with `other_city_rate` elsewhere; every other class keeps its base rate in all cities.
    """
    _check_rate("other_city_rate", other_city_rate)
    planted_anywhere = {name for planted in cities.values() for name in planted}
    return {
        city: {
            name: planted.get(name, other_city_rate) if name in planted_anywhere else BASE_RATES[name]
            for name in OPTIONAL
        }
        for city, planted in cities.items()
    }


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be in [0, 1], got {value!r}")


# --------------------------------------------------------------------------------------------- canvas


@dataclass
class _Placed:
    """An optional object already drawn: its visible-area estimate and how much of it is hidden so far."""

    rects: list[Rect]
    area: float
    covered: float = 0.0
    limit: float = 0.5  # the fraction of `area` that nearer objects may hide


@dataclass
class _Canvas:
    """The image, its label map, the scene's random source and lighting, and the occlusion bookkeeping.

    Pixels are packed little-endian RGBX words: NumPy fills a (h, w) uint32 slice ~40x faster than the
    (h, w, 3) uint8 slice with a broadcast colour, which is most of the drawing time.
    """

    rng: np.random.Generator
    size: int
    night: bool
    pixels: np.ndarray = field(init=False)
    label: np.ndarray = field(init=False)
    light: float = field(init=False)
    placed: list[_Placed] = field(default_factory=list)
    vehicle_floor: int = 0  # bottom row of the nearest vehicle so far: later vehicles stand nearer

    def __post_init__(self) -> None:
        self.pixels = np.zeros((self.size, self.size), "<u4")
        self.label = np.full((self.size, self.size), _ID["sky"], np.uint8)
        self.light = self.rng.uniform(0.28, 0.4) if self.night else self.rng.uniform(0.85, 1.1)

    def px(self, low: float, high: float | None = None) -> int:
        """A length in pixels: `low` (or uniform in [low, high]) times the image size, at least 1."""
        frac = low if high is None else self.rng.uniform(low, high)
        return max(1, round(frac * self.size))

    def tint(self, base: Iterable[float], jitter: float = 18.0) -> Color:
        """A jittered colour under the scene's lighting."""
        rgb = (np.asarray(base, float) + self.rng.uniform(-jitter, jitter, 3)) * self.light
        return np.clip(rgb, 0, 255).astype(np.uint8)

    def glow(self, base: Iterable[float], jitter: float = 12.0) -> Color:
        """A jittered colour of a light source: bright by day and by night."""
        rgb = np.asarray(base, float) + self.rng.uniform(-jitter, jitter, 3)
        return np.clip(rgb, 0, 255).astype(np.uint8)

    def pick(self, palette: list[tuple[int, int, int]]) -> tuple[int, int, int]:
        """One colour of a palette, uniformly."""
        return palette[self.rng.integers(len(palette))]

    def rect(
        self, x0: int, y0: int, x1: int, y1: int, color: Color, cls: str, mask: np.ndarray | None = None
    ) -> None:
        """Paint a rectangle (or the True pixels of `mask`, shaped like it) with a colour and a class."""
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(self.size, x1), min(self.size, y1)
        if cx0 >= cx1 or cy0 >= cy1:
            return
        pixels, label = self.pixels[cy0:cy1, cx0:cx1], self.label[cy0:cy1, cx0:cx1]
        word = int(color[0]) | int(color[1]) << 8 | int(color[2]) << 16
        if mask is None:
            pixels[:] = word
            label[:] = _ID[cls]
            return
        mask = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        pixels[mask] = word
        label[mask] = _ID[cls]

    def rgb(self) -> np.ndarray:
        """The image as a (size, size, 3) uint8 RGB array."""
        return np.array(
            Image.fromarray(self.pixels.view(np.uint8).reshape(self.size, self.size, 4)).convert("RGB")
        )

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, color: Color, cls: str) -> None:
        """Fill the ellipse with centre (cx, cy) and radii (rx, ry), in pixel coordinates."""
        x0, y0, x1, y1 = math.floor(cx - rx), math.floor(cy - ry), math.ceil(cx + rx), math.ceil(cy + ry)
        ys = (np.arange(y0, y1) + 0.5 - cy) / ry
        xs = (np.arange(x0, x1) + 0.5 - cx) / rx
        self.rect(x0, y0, x1, y1, color, cls, ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0)

    def trapezoid(
        self,
        y0: int,
        y1: int,
        top: tuple[float, float],
        bottom: tuple[float, float],
        color: Color,
        cls: str,
        stripe: int = 0,
    ) -> None:
        """Fill rows y0..y1 between x-bounds that move linearly from `top` (x0, x1) to `bottom` (x0, x1).

        With `stripe` > 0 only every other `stripe`-wide column band is filled (awning stripes).
        """
        t = (np.arange(y0, y1) + 0.5 - y0) / max(1, y1 - y0)
        left = top[0] + (bottom[0] - top[0]) * t
        right = top[1] + (bottom[1] - top[1]) * t
        x0, x1 = math.floor(min(top[0], bottom[0])), math.ceil(max(top[1], bottom[1]))
        xs = np.arange(x0, x1) + 0.5
        mask = (xs[None, :] >= left[:, None]) & (xs[None, :] < right[:, None])
        if stripe:
            mask &= ((np.arange(x1 - x0) // stripe) % 2 == 1)[None, :]
        self.rect(x0, y0, x1, y1, color, cls, mask)

    def place(self, sample: Callable[[], tuple[Any, list[Rect]]], required: bool, opacity: float = 1.0):
        """Choose where to draw an optional object so it hides at most half of any object drawn before.

        `sample()` proposes (params, rects); up to 12 proposals are tried. An optional extra instance that
        does not fit is dropped (None); a required one takes the least-occluding proposal.
        """
        best: tuple[float, Any, list[Rect], list[float]] | None = None
        for _ in range(12):
            params, rects = sample()
            rects = [self._clip(r) for r in rects]
            hits = [opacity * _overlap(rects, p.rects) for p in self.placed]
            excess = max((p.covered + h - p.limit * p.area for p, h in zip(self.placed, hits)), default=-1.0)
            if best is None or excess < best[0]:
                best = (excess, params, rects, hits)
            if excess <= 0:
                break
        excess, params, rects, hits = best
        if excess > 0 and not required:
            return None
        for placed, hit in zip(self.placed, hits):
            placed.covered += hit
        self.placed.append(_Placed(rects, float(sum(_area(r) for r in rects))))
        return params

    def _clip(self, r: Rect) -> Rect:
        """The part of a rectangle inside the image."""
        s = self.size
        return (min(max(r[0], 0), s), min(max(r[1], 0), s), min(max(r[2], 0), s), min(max(r[3], 0), s))


def _area(r: Rect) -> int:
    return max(0, r[2] - r[0]) * max(0, r[3] - r[1])


def _overlap(a: list[Rect], b: list[Rect]) -> float:
    """Total area where the rectangles of `a` and of `b` intersect."""
    total = 0
    for ax0, ay0, ax1, ay1 in a:
        for bx0, by0, bx1, by1 in b:
            w, h = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
            if w > 0 and h > 0:
                total += w * h
    return float(total)


def _axis(n: int, period: int, on: int, centre: bool, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis of n pixels: which pixels lie in an `on`-long run repeating every `period`, and the run
    index of each pixel. Centred patterns hold only whole runs, with equal margins at both ends."""
    pos = np.arange(n) + offset
    if centre:
        runs = max(0, (n + period - on) // period)
        start = (n - (runs * period - (period - on))) // 2
        pos = np.arange(n) - start
        return (pos >= 0) & (pos % period < on) & (pos < runs * period), pos // period
    return pos % period < on, pos // period


def _grid(
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

    With `rng`, each cell is kept with probability `rate` (lit windows, the glyphs of a sign).
    """
    rows, row_cell = _axis(h, period[0], on[0], centre, offset[0])
    cols, col_cell = _axis(w, period[1], on[1], centre, offset[1])
    mask = rows[:, None] & cols[None, :]
    if rng is not None:
        keep = rng.random((h // period[0] + 3, w // period[1] + 3)) < rate
        mask &= keep[(row_cell % keep.shape[0])[:, None], (col_cell % keep.shape[1])[None, :]]
    return mask


@dataclass(frozen=True)
class _Layout:
    """Where the facades stand (ground) and where the sidewalk meets the road (curb), in pixels, and the
    optional classes in the scene (objects that share a slot, like grass and earth, split it)."""

    ground: int
    curb: int
    present: frozenset[str]


# --------------------------------------------------------------------------------------------- backdrop

_FACADES = [
    (200, 190, 170),
    (165, 85, 65),
    (150, 150, 155),
    (225, 222, 212),
    (190, 168, 138),
    (118, 108, 98),
    (205, 160, 128),
    (160, 175, 160),
    (215, 200, 120),
]
_GLASS = [(92, 124, 152), (110, 142, 162), (70, 92, 112), (150, 172, 186), (86, 110, 100)]
_BRIGHT = [
    (225, 40, 40),
    (245, 205, 40),
    (242, 242, 236),
    (40, 90, 205),
    (40, 160, 80),
    (250, 130, 30),
    (200, 40, 160),
]
_CLOTHES = [
    (40, 40, 45),
    (200, 40, 40),
    (40, 70, 160),
    (230, 230, 225),
    (90, 120, 60),
    (150, 120, 90),
    (120, 60, 140),
    (235, 200, 60),
]
_SKIN = [(240, 200, 170), (200, 150, 110), (140, 95, 65), (95, 65, 45)]
_VEHICLE = [
    (200, 30, 30),
    (235, 235, 235),
    (30, 30, 35),
    (150, 155, 160),
    (40, 70, 150),
    (220, 190, 40),
    (60, 110, 70),
    (120, 30, 40),
]


def _draw_sky(c: _Canvas, lay: _Layout) -> None:
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
    c.pixels[: lay.ground] = (rows[:, 0] | rows[:, 1] << 8 | rows[:, 2] << 16)[:, None]


def _draw_skyline(c: _Canvas, lay: _Layout) -> None:
    """Hazy distant blocks between the facades' roofs."""
    if c.rng.random() < 0.4:
        return
    sky = np.array([(int(c.pixels[lay.ground - 1, 0]) >> shift) & 255 for shift in (0, 8, 16)], float)
    x = -c.px(0.0, 0.1)
    while x < c.size:
        w = c.px(0.08, 0.22)
        haze = (np.asarray(c.pick(_FACADES), float) * c.light * 0.5 + sky * 0.5).astype(np.uint8)
        c.rect(x, c.px(0.08, 0.32), x + w, lay.ground, haze, "building")
        x += w + c.px(0.0, 0.06)


def _windows(c: _Canvas, box: Rect, cls: str, glass: Color, lit_rate: float) -> None:
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
    c.rect(x0, y0, x1, y1, glass, cls, _grid(h, w, period, on, centre=True))
    if c.night:
        lit = _grid(h, w, period, on, centre=True, rng=c.rng, rate=lit_rate)
        c.rect(x0, y0, x1, y1, c.glow((255, 214, 140), 25), cls, lit)


def _draw_facades(c: _Canvas, lay: _Layout) -> None:
    """A row of buildings across the image, each with windows, a cornice and a dark ground floor."""
    x = -c.px(0.0, 0.15)
    while x < c.size:
        w, top = c.px(0.18, 0.4), c.px(0.12, 0.42)
        wall = c.tint(c.pick(_FACADES))
        c.rect(x, top, x + w, lay.ground, wall, "building")
        c.rect(x, top, x + w, top + max(1, c.px(0.015)), (wall * 0.7).astype(np.uint8), "building")
        shop = lay.ground - c.px(0.09, 0.12)
        glass = c.tint((55, 62, 72), 12)
        _windows(
            c,
            (x + c.px(0.02), top + c.px(0.04), x + w - c.px(0.02), shop - c.px(0.03)),
            "building",
            glass,
            0.45,
        )
        c.rect(
            x + c.px(0.02), shop, x + w - c.px(0.02), lay.ground, (glass * 0.8).astype(np.uint8), "building"
        )
        x += w + (c.px(0.02, 0.08) if c.rng.random() < 0.15 else 0)


def _draw_ground(c: _Canvas, lay: _Layout) -> None:
    """Paved sidewalk with a curb, asphalt road with dashed lane markings; both registered as occludable."""
    c.rect(0, lay.ground, c.size, lay.curb, c.tint((172, 166, 156), 14), "sidewalk")
    joints = _grid(lay.curb - lay.ground, c.size, (1, c.px(0.08, 0.12)), (1, 1))
    c.rect(0, lay.ground, c.size, lay.curb, c.tint((135, 130, 122), 8), "sidewalk", joints)
    c.rect(0, lay.curb - max(1, c.px(0.012)), c.size, lay.curb, c.tint((205, 202, 195), 8), "sidewalk")
    c.rect(0, lay.curb, c.size, c.size, c.tint((82, 82, 86), 10), "road")
    lane = lay.curb + round((c.size - lay.curb) * c.rng.uniform(0.45, 0.6))
    dash = c.px(0.1, 0.16)
    marks = _grid(max(1, c.px(0.015)), c.size, (1, 2 * dash), (1, dash), (0, c.px(0.0, 0.2)))
    paint = c.tint((225, 205, 90), 10) if c.rng.random() < 0.3 else c.tint((228, 228, 224), 8)
    c.rect(0, lane, c.size, lane + marks.shape[0], paint, "road", marks)
    for rect in ((0, lay.ground, c.size, lay.curb), (0, lay.curb, c.size, c.size)):
        c.placed.append(_Placed([rect], float(_area(rect)), limit=0.85))


# --------------------------------------------------------------------------------------------- objects


def _draw_skyscraper(c: _Canvas, lay: _Layout) -> None:
    """A tall glass tower reaching (nearly) the top of the image, with mullions and floor bands."""

    def sample():
        w = c.px(0.2, 0.3)
        x, top = int(c.rng.integers(-w // 4, c.size - 3 * w // 4)), c.px(0.0, 0.08)
        return (x, w, top), [(x, top, x + w, lay.ground)]

    x, w, top = c.place(sample, required=True)
    glass = c.tint(c.pick(_GLASS), 14)
    c.rect(x, top, x + w, lay.ground, glass, "skyscraper")
    crown = c.px(0.03, 0.06)
    c.rect(x + crown, top - crown, x + w - crown, top, (glass * 0.8).astype(np.uint8), "skyscraper")
    h = lay.ground - top
    mullion = _grid(h, w, (1, max(3, c.px(0.03, 0.045))), (1, 1)) | _grid(
        h, w, (max(3, c.px(0.035)), 1), (1, 1)
    )
    frame = np.clip(glass.astype(int) + 45, 0, 255).astype(np.uint8)
    c.rect(x, top, x + w, lay.ground, frame, "skyscraper", mullion)
    if c.night:
        _windows(
            c, (x + 1, top + 1, x + w - 1, lay.ground), "skyscraper", (glass * 0.5).astype(np.uint8), 0.6
        )


def _draw_awning(c: _Canvas, lay: _Layout) -> None:
    """A striped shop awning over the ground floor, sloping outwards."""

    def sample():
        w, h = c.px(0.2, 0.34), c.px(0.06, 0.09)
        x, y = int(c.rng.integers(-w // 5, c.size - 4 * w // 5)), lay.ground - c.px(0.15, 0.2)
        return (x, y, w, h), [(x, y, x + w, y + h)]

    x, y, w, h = c.place(sample, required=True)
    slope = max(1, round(0.08 * w))
    top, bottom = (x + slope, x + w - slope), (x, x + w)
    c.trapezoid(y, y + h, top, bottom, c.tint((240, 240, 235), 10), "awning")
    stripe = max(2, round(w / c.rng.integers(5, 9)))
    c.trapezoid(y, y + h, top, bottom, c.tint(c.pick(_BRIGHT[:6]), 15), "awning", stripe=stripe)


def _signboard(c: _Canvas, lay: _Layout, required: bool) -> None:
    """One shop sign on a facade: tall (Tokyo-style) or wide, bright, with rows of glyph blocks."""

    def sample():
        if c.rng.random() < 0.5:
            w, h = c.px(0.11, 0.16), c.px(0.27, 0.36)
        else:
            w, h = c.px(0.28, 0.42), c.px(0.1, 0.14)
        top_max = max(c.px(0.06), lay.ground - c.px(0.14) - h)
        x, y = int(c.rng.integers(-w // 6, c.size - 5 * w // 6)), int(c.rng.integers(c.px(0.06), top_max + 1))
        return (x, y, w, h), [(x, y, x + w, y + h)]

    params = c.place(sample, required)
    if params is None:
        return
    x, y, w, h = params
    color = c.pick(_BRIGHT)
    paint = c.glow(color, 15) if c.night else c.tint(color, 15)
    c.rect(x, y, x + w, y + h, (paint * 0.55).astype(np.uint8), "signboard")
    border = max(1, round(0.08 * min(w, h)))
    c.rect(x + border, y + border, x + w - border, y + h - border, paint, "signboard")
    gh, gw = h - 4 * border, w - 4 * border
    cell = max(2, round(0.6 * min(gh, gw)) if h > w else round(0.7 * gh))
    if gh >= 2 and gw >= 2:
        period = cell + max(1, cell // 3)
        glyphs = _grid(gh, gw, (period, period), (cell, cell), centre=True, rng=c.rng, rate=0.85)
        ink = (30, 30, 30) if color in ((245, 205, 40), (242, 242, 236)) else (250, 250, 245)
        gx, gy = x + 2 * border, y + 2 * border
        c.rect(gx, gy, gx + gw, gy + gh, c.tint(ink, 10), "signboard", glyphs)


def _draw_signboard(c: _Canvas, lay: _Layout) -> None:
    _signboard(c, lay, required=True)
    for _ in range(int(c.rng.integers(0, 3))):
        _signboard(c, lay, required=False)


def _draw_grass(c: _Canvas, lay: _Layout) -> None:
    """A lawn strip along the front or back of the sidewalk (the front when an earth bank takes the back)."""
    front = "earth" in lay.present or c.rng.random() < 0.5
    deepest = 0.5 if "earth" in lay.present else 0.75

    def sample():
        w, h = c.px(0.35, 0.75), max(2, round((lay.curb - lay.ground) * c.rng.uniform(0.45, deepest)))
        x = int(c.rng.integers(-w // 4, c.size - 3 * w // 4))
        y = lay.curb - h if front else lay.ground
        return (x, y, w, h), [(x, y, x + w, y + h)]

    x, y, w, h = c.place(sample, required=True)
    c.rect(x, y, x + w, y + h, c.tint((78, 135, 52), 16), "grass")
    tufts = _grid(h, w, (2, 3), (1, 1), (0, int(c.rng.integers(3))))
    c.rect(x, y, x + w, y + h, c.tint((58, 105, 40), 10), "grass", tufts)


def _draw_earth(c: _Canvas, lay: _Layout) -> None:
    """A bare earth bank (Pittsburgh's hillsides) rising over the facades' base down to the curb."""

    bottom = (lay.ground + lay.curb) // 2 if "grass" in lay.present else lay.curb

    def sample():
        w = c.px(0.35, 0.65)
        x, rise = int(c.rng.integers(-w // 4, c.size - 3 * w // 4)), c.px(0.06, 0.14)
        return (x, w, rise), [(x, lay.ground - rise // 2, x + w, bottom)]

    x, w, rise = c.place(sample, required=True)
    t = (np.arange(w) + 0.5) / w
    phase, waves = c.rng.uniform(0, 2 * np.pi), c.rng.uniform(2, 5)
    height = rise * np.sin(np.pi * t) ** 0.6 + 0.25 * rise * np.sin(waves * np.pi * t + phase)
    tops = lay.ground - np.maximum(height, 0).round().astype(int)
    y0 = int(tops.min())
    ys = np.arange(y0, lay.curb)[:, None]
    soil = c.tint(c.pick([(132, 100, 70), (152, 118, 82), (112, 86, 60), (160, 128, 96)]), 12)
    c.rect(x, y0, x + w, lay.curb, soil, "earth", ys >= tops[None, :])
    strata = (ys >= tops[None, :] + 2) & (((ys + (np.arange(w)[None, :] // 5)) % 5) == 0)
    c.rect(x, y0, x + w, lay.curb, (soil * 0.78).astype(np.uint8), "earth", strata)


def _tree(c: _Canvas, lay: _Layout, required: bool) -> None:
    """A street tree: trunk on the sidewalk and a two-lobed canopy."""

    def sample():
        base, trunk = int(c.rng.integers(lay.ground + c.px(0.01), lay.curb)), c.px(0.15, 0.24)
        rx, ry, x = c.px(0.08, 0.14), c.px(0.09, 0.14), int(c.rng.integers(0, c.size))
        cy = base - trunk
        return (x, base, trunk, rx, ry), [(x - rx, cy - ry, x + rx, cy + ry), (x - 2, cy, x + 2, base)]

    params = c.place(sample, required)
    if params is None:
        return
    x, base, trunk, rx, ry = params
    half = max(1, c.px(0.012, 0.02))
    c.rect(x - half, base - trunk, x + half, base, c.tint((92, 68, 48), 12), "tree")
    leaf = c.tint(c.pick([(60, 110, 45), (85, 130, 50), (45, 90, 50), (110, 135, 60)]), 14)
    cy = base - trunk
    c.ellipse(x, cy, rx, ry, leaf, "tree")
    shift = c.rng.choice([-1, 1]) * rx * 0.45
    c.ellipse(
        x + shift, cy - ry * 0.35, rx * 0.7, ry * 0.7, (leaf * 1.15).clip(0, 255).astype(np.uint8), "tree"
    )


def _draw_tree(c: _Canvas, lay: _Layout) -> None:
    _tree(c, lay, required=True)
    if c.rng.random() < 0.4:
        _tree(c, lay, required=False)


def _pole(c: _Canvas, lay: _Layout, required: bool) -> None:
    """A plain utility/sign pole."""

    def sample():
        base, x = int(c.rng.integers(lay.ground + c.px(0.01), lay.curb + 1)), int(c.rng.integers(0, c.size))
        top, half = c.px(0.1, 0.3), max(1, c.px(0.01))
        return (x, top, base, half), [(x - half, top, x + half, base)]

    params = c.place(sample, required)
    if params is None:
        return
    x, top, base, half = params
    color = c.tint(c.pick([(120, 120, 125), (70, 85, 70), (150, 140, 120)]), 12)
    c.rect(x - half, top, x + half, base, color, "pole")
    c.rect(x - half - 1, top, x + half + 1, top + max(1, c.px(0.012)), color, "pole")


def _draw_pole(c: _Canvas, lay: _Layout) -> None:
    _pole(c, lay, required=True)
    if c.rng.random() < 0.4:
        _pole(c, lay, required=False)


def _draw_streetlight(c: _Canvas, lay: _Layout) -> None:
    """A lamp post at the curb with an arm and a lamp head that glows at night."""

    def sample():
        x, top, arm = int(c.rng.integers(0, c.size)), c.px(0.12, 0.25), c.px(0.08, 0.13)
        side = 1 if c.rng.random() < 0.5 else -1
        base = lay.curb - c.px(0.0, 0.02)
        return (x, top, arm, side, base), [(min(x, x + side * arm), top, max(x, x + side * arm) + 2, base)]

    x, top, arm, side, base = c.place(sample, required=True, opacity=0.4)
    half, bar = max(1, c.px(0.01)), max(1, c.px(0.012))
    metal = c.tint((60, 65, 70), 10)
    c.rect(x - half, top, x + half, base, metal, "streetlight")
    end = x + side * arm
    c.rect(min(x, end), top, max(x, end) + half, top + bar, metal, "streetlight")
    lamp = c.glow((255, 238, 170), 10) if c.night else c.tint((215, 215, 205), 10)
    lw, lh = c.px(0.06), max(2, c.px(0.025))
    c.rect(end - lw // 2, top, end + lw // 2 + 1, top + lh, lamp, "streetlight")


def _person(c: _Canvas, lay: _Layout, required: bool) -> None:
    """A pedestrian on the sidewalk: head, torso and two legs."""

    def sample():
        h = c.px(0.16, 0.26)
        feet = int(c.rng.integers((lay.ground + lay.curb) // 2, lay.curb + c.px(0.02) + 1))
        x = int(c.rng.integers(0, c.size))
        w = max(3, round(0.3 * h))
        return (x, feet, h, w), [(x - w // 2, feet - h, x + w // 2 + 1, feet)]

    params = c.place(sample, required)
    if params is None:
        return
    x, feet, h, w = params
    top = feet - h
    c.ellipse(x + 0.5, top + 0.1 * h, 0.17 * w + 0.6, 0.1 * h + 0.5, c.tint(c.pick(_SKIN), 10), "person")
    c.rect(
        x - w // 2,
        top + round(0.2 * h),
        x + w // 2 + 1,
        top + round(0.6 * h),
        c.tint(c.pick(_CLOTHES)),
        "person",
    )
    leg, legs = max(1, round(0.18 * w)), c.tint(c.pick(_CLOTHES[:3] + _CLOTHES[5:6]))
    for lx in (x - w // 2 + round(0.15 * w), x + w // 2 + 1 - round(0.15 * w) - leg):
        c.rect(lx, top + round(0.58 * h), lx + leg, feet, legs, "person")


def _draw_person(c: _Canvas, lay: _Layout) -> None:
    _person(c, lay, required=True)
    for _ in range(int(c.rng.integers(0, 3))):
        _person(c, lay, required=False)


def _draw_fence(c: _Canvas, lay: _Layout) -> None:
    """A picket fence or railing along the back of the sidewalk; furniture and people stand in front."""

    def sample():
        w, h, band = c.px(0.45, 0.9), c.px(0.12, 0.17), lay.curb - lay.ground
        x = int(c.rng.integers(-w // 5, c.size - 4 * w // 5))
        base = int(c.rng.integers(lay.ground + band // 4, lay.ground + (3 * band) // 5 + 1))
        return (x, base - h, w, h), [(x, base - h, x + w, base)]

    x, y, w, h = c.place(sample, required=True, opacity=0.6)
    period = max(3, c.px(0.03, 0.045))
    rail = max(1, round(0.14 * h))
    if c.rng.random() < 0.5:
        mask = _grid(h, w, (1, period), (1, max(2, round(0.55 * period))))
        mask[round(0.2 * h) : round(0.2 * h) + rail] = True
        mask[round(0.7 * h) : round(0.7 * h) + rail] = True
        color = c.pick([(235, 235, 228), (150, 110, 75), (90, 125, 85)])
    else:
        mask = _grid(h, w, (1, period), (1, max(1, round(0.3 * period))))
        mask[:rail] = True
        mask[h - rail :] = True
        mask |= _grid(h, w, (1, 4 * period), (1, max(2, round(0.5 * period))))
        color = c.pick([(170, 175, 180), (60, 110, 80), (215, 205, 60), (110, 110, 120)])
    c.rect(x, y, x + w, y + h, c.tint(color, 12), "fence", mask)


def _vehicle_base(c: _Canvas, lay: _Layout, h: int) -> int:
    """Bottom row of a vehicle on the road, no farther away than the vehicles drawn before (behind) it."""
    high = c.size - c.px(0.01)
    low = max(c.vehicle_floor, lay.curb + max(h // 3, round(0.25 * (c.size - lay.curb))))
    return int(c.rng.integers(min(low, high), high + 1))


def _wheels(c: _Canvas, x: int, w: int, bottom: int, r: float, cls: str) -> None:
    for cx in (x + 0.2 * w, x + 0.8 * w):
        c.ellipse(cx, bottom - r, r, r, c.tint((25, 25, 28), 6), cls)
        c.ellipse(cx, bottom - r, r * 0.45, r * 0.45, c.tint((150, 150, 155), 10), cls)


def _draw_bus(c: _Canvas, lay: _Layout) -> None:
    """A city bus in side view: body, a band of windows (lit at night), a door and wheels."""

    def sample():
        w, h = c.px(0.42, 0.55), c.px(0.26, 0.32)
        x, bottom = int(c.rng.integers(-w // 5, c.size - 4 * w // 5)), _vehicle_base(c, lay, h)
        return (x, bottom, w, h), [(x, bottom - h, x + w, bottom)]

    x, bottom, w, h = c.place(sample, required=True)
    c.vehicle_floor = bottom
    top, r = bottom - h, 0.12 * h
    body = c.tint(c.pick([(40, 120, 70), (235, 235, 230), (40, 80, 170), (230, 140, 30), (200, 40, 40)]), 12)
    c.rect(x, top, x + w, bottom - round(r), body, "bus")
    band_top, band_h = top + round(0.12 * h), round(0.32 * h)
    pane = _grid(band_h, w - 2, (1, max(3, round(0.12 * w))), (1, max(2, round(0.1 * w))), centre=True)
    glass = c.glow((250, 230, 170), 15) if c.night else c.tint((50, 60, 75), 10)
    c.rect(x + 1, band_top, x + w - 1, band_top + band_h, glass, "bus", pane)
    door = x + round(0.08 * w)
    c.rect(door, band_top, door + round(0.08 * w), bottom - round(r), c.tint((45, 50, 60), 8), "bus")
    _wheels(c, x, w, bottom, r * 1.3, "bus")


def _draw_car(c: _Canvas, lay: _Layout) -> None:
    """One or two cars in side view."""
    _car(c, lay, required=True)
    if c.rng.random() < 0.35:
        _car(c, lay, required=False)


def _car(c: _Canvas, lay: _Layout, required: bool) -> None:
    """A car: body, a cabin with tinted windows, wheels, and headlights at night."""

    def sample():
        w, h = c.px(0.26, 0.36), c.px(0.13, 0.18)
        x, bottom = int(c.rng.integers(-w // 5, c.size - 4 * w // 5)), _vehicle_base(c, lay, h)
        return (x, bottom, w, h), [(x, bottom - h, x + w, bottom)]

    params = c.place(sample, required)
    if params is None:
        return
    x, bottom, w, h = params
    c.vehicle_floor = bottom
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
        c.rect(
            x + w - max(2, round(0.06 * w)),
            cabin + 1,
            x + w,
            cabin + max(2, round(0.15 * h)),
            c.glow((255, 245, 200)),
            "car",
        )
    _wheels(c, x, w, bottom, r * 1.25, "car")


_DRAWERS: dict[str, Callable[[_Canvas, _Layout], None]] = {
    "skyscraper": _draw_skyscraper,
    "awning": _draw_awning,
    "signboard": _draw_signboard,
    "grass": _draw_grass,
    "earth": _draw_earth,
    "fence": _draw_fence,
    "tree": _draw_tree,
    "pole": _draw_pole,
    "streetlight": _draw_streetlight,
    "person": _draw_person,
    "bus": _draw_bus,
    "car": _draw_car,
}
assert tuple(_DRAWERS) == OPTIONAL


@functools.lru_cache(maxsize=8)
def _grain(size: int) -> np.ndarray:
    """A fixed film-grain tile (2*size square, packed like the canvas), shifted per image.

    XOR with 0..7 in each of R, G, B moves a value by at most 7 and never overflows: one cheap integer pass
    that keeps surfaces from being perfectly flat.
    """
    noise = np.random.default_rng(1905_01932).integers(0, 8, (2 * size, 2 * size), dtype=np.uint32)
    return (noise | noise << 8 | noise << 16).astype("<u4")


_ATTEMPTS = 6  # redraws (new layout, same random stream) when a nearer object hid a present one


def _draw_scene(rng: np.random.Generator, size: int, present: frozenset[str], night: bool) -> _Canvas:
    """One layout: the backdrop, then the present optional classes back to front."""
    c = _Canvas(rng, size, night)
    ground = c.px(0.5, 0.6)
    lay = _Layout(ground, ground + c.px(0.1, 0.15), present)
    for draw in (_draw_sky, _draw_skyline, _draw_facades, _draw_ground):
        draw(c, lay)
    for name in OPTIONAL:
        if name in present:
            _DRAWERS[name](c, lay)
    return c


def render_scene(
    rng: np.random.Generator, size: int, objects: Mapping[str, bool] | Iterable[str], night: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene containing exactly the given optional classes.

    Each present class is visible in the label map (at least 0.1% of the pixels): a layout where nearer
    objects hid one is redrawn. Returns the (size, size, 3) uint8 RGB image and its (size, size) uint8
    ADE20K label map (every pixel labelled). `objects` is a set of optional class names, or a mapping
    name -> present.
    """
    present = {k for k, v in objects.items() if v} if isinstance(objects, Mapping) else set(objects)
    unknown = present - set(OPTIONAL) - set(ALWAYS_DRAWN)
    if unknown:
        raise ValueError(
            f"objects: {sorted(unknown)} not renderable; renderable: {list(renderable_classes())}"
        )
    if size < 16:
        raise ValueError(f"size: must be at least 16 pixels, got {size}")
    wanted = np.array([_ID[name] for name in present | set(ALWAYS_DRAWN)])
    for _ in range(_ATTEMPTS):
        c = _draw_scene(rng, size, frozenset(present), night)
        if (np.bincount(c.label.ravel(), minlength=256)[wanted] >= max(4, size * size // 1000)).all():
            break
    dy, dx = rng.integers(0, size, 2)
    c.pixels ^= _grain(size)[dy : dy + size, dx : dx + size]
    return c.rgb(), c.label


# --------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to render and write one image."""

    root: str
    city: str
    city_index: int
    index: int
    digits: int
    size: int
    seed: int
    probabilities: tuple[float, ...]
    night_rate: float


def image_rng(seed: int, city_index: int, index: int) -> np.random.Generator:
    """The random source of one image: independent of the order and the process that renders it."""
    return np.random.default_rng(np.random.SeedSequence([seed, city_index, index]))


def _render_job(job: _Job) -> dict[str, Any]:
    """Sample an image's contents, render it, write the JPEG and the PNG label map; return its record."""
    rng = image_rng(job.seed, job.city_index, job.index)
    objects = [name for name, p in zip(OPTIONAL, job.probabilities) if rng.random() < p]
    night = bool(rng.random() < job.night_rate)
    image, label = render_scene(rng, job.size, objects, night)
    stem = f"{job.city}_{job.index:0{job.digits}d}"
    folder = Path(job.root, job.city)
    Image.fromarray(image).save(folder / f"{stem}.jpg", quality=JPEG_QUALITY)
    Image.fromarray(label).save(folder / f"{stem}.labels.png", compress_level=1)
    return {
        "image": f"{job.city}/{stem}.jpg",
        "labels": f"{job.city}/{stem}.labels.png",
        "night": night,
        "objects": objects,
    }


def _settings(
    cities: Mapping[str, Any],
    images_per_city: int,
    size: int,
    seed: int,
    other_city_rate: float,
    night_rate: float,
) -> dict[str, Any]:
    """The validated settings that determine the generated files (workers and progress do not).

    The city order is part of them: a city's index seeds its images.
    """
    cities = normalize_cities(cities)
    _check_rate("other_city_rate", other_city_rate)
    _check_rate("night_rate", night_rate)
    if images_per_city < 1:
        raise ValueError(f"images_per_city: must be at least 1, got {images_per_city}")
    if size < 16:
        raise ValueError(f"size: must be at least 16 pixels, got {size}")
    return {
        "generator_version": GENERATOR_VERSION,
        "cities": cities,
        "city_order": list(cities),
        "images_per_city": int(images_per_city),
        "size": int(size),
        "seed": int(seed),
        "other_city_rate": float(other_city_rate),
        "night_rate": float(night_rate),
        "jpeg_quality": JPEG_QUALITY,
    }


def generate(
    root: Path,
    cities: Mapping[str, Any] = DEFAULT_CITIES,
    images_per_city: int = 100,
    size: int = 224,
    seed: int = 0,
    other_city_rate: float = 0.1,
    night_rate: float = 0.3,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a synthetic dataset: root/<city>/<city>_<NNNNN>.jpg, a .labels.png beside each, manifest.json.

    The files depend only on the settings and seed (not on `workers`). Returns the manifest.
    """
    settings = _settings(cities, images_per_city, size, seed, other_city_rate, night_rate)
    probabilities = city_probabilities(settings["cities"], other_city_rate)
    root = Path(root)
    digits = max(5, len(str(images_per_city - 1)))
    jobs = []
    for ci, city in enumerate(settings["cities"]):
        (root / city).mkdir(parents=True, exist_ok=True)
        probs = tuple(probabilities[city][name] for name in OPTIONAL)
        jobs += [
            _Job(str(root), city, ci, i, digits, size, seed, probs, night_rate)
            for i in range(images_per_city)
        ]
    records = _run_jobs(jobs, workers, progress)
    manifest = {
        **settings,
        "planted": settings["cities"],
        "probabilities": probabilities,
        "images": {city: [r for r, j in zip(records, jobs) if j.city == city] for city in settings["cities"]},
    }
    _write_json(root / "manifest.json", manifest)
    return manifest


def _run_jobs(jobs: list[_Job], workers: int, progress: bool) -> list[dict[str, Any]]:
    """Render all jobs, in order, in this process or a pool of `workers` processes, with a progress bar.

    Workers are forked where the OS allows: a spawned worker re-imports the citylens package (torch and
    Lightning, many seconds), while the rendering itself needs only NumPy and Pillow.
    """
    bar = functools.partial(tqdm, total=len(jobs), desc="synthetic cities", unit="img", disable=not progress)
    if workers <= 1:
        return list(bar(map(_render_job, jobs)))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        return list(bar(pool.imap(_render_job, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers))))))


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the generation settings (names the cache directory)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _complete(path: Path, settings: Mapping[str, Any]) -> bool:
    """Whether `path` holds a finished generation with exactly these settings."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in settings.items())


def ensure_synthetic(
    cache_dir: Path,
    cities: Mapping[str, Any] = DEFAULT_CITIES,
    images_per_city: int = 100,
    size: int = 224,
    seed: int = 0,
    other_city_rate: float = 0.1,
    night_rate: float = 0.3,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Return cache_dir/synthetic-<hash of the settings>, generating it on first use.

    Generation goes to a temporary sibling that is renamed into place only when complete, so an interrupted
    run never leaves a directory that looks finished; when two processes race, the loser uses the winner's.
    """
    settings = _settings(cities, images_per_city, size, seed, other_city_rate, night_rate)
    cache_dir = Path(cache_dir)
    final = cache_dir / f"synthetic-{settings_hash(settings)}"
    if _complete(final, settings):
        return final
    if final.exists():
        raise RuntimeError(f"{final} exists but is not a complete generation with these settings; delete it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=cache_dir))
    try:
        generate(
            tmp,
            settings["cities"],
            images_per_city,
            size,
            seed,
            other_city_rate,
            night_rate,
            workers,
            progress,
        )
        os.rename(tmp, final)
    except OSError:
        if not _complete(final, settings):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
