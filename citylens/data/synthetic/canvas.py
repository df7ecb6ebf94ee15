"""The drawing canvas: packed-RGBX pixels with an exact label map, shapes, and occlusion-aware placement."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from citylens.data.synthetic.config import CLASS_ID

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive
Color = np.ndarray  # (3,) uint8
Extras = Callable[[np.random.Generator], int]  # how many optional extra instances of an object to try


@dataclass(frozen=True)
class Layout:
    """Where the facades stand (ground) and where the sidewalk meets the road (curb), in pixels, and the
    optional classes in the scene (objects that share a slot, like grass and earth, split it)."""

    ground: int
    curb: int
    present: frozenset[str]


@dataclass
class Placed:
    """An object already drawn: its visible-area estimate and how much of it is hidden so far."""

    rects: list[Rect]
    area: float
    covered: float = 0.0
    limit: float = 0.5  # the fraction of `area` that nearer objects may hide


@dataclass
class Canvas:
    """The image, its label map, the scene's random source and lighting, and the occlusion bookkeeping.

    Pixels are packed little-endian RGBX words: NumPy fills a (h, w) uint32 slice ~40x faster than the
    (h, w, 3) uint8 slice with a broadcast colour, which is most of the drawing time.

    One canvas draws several renderings of the same scene at once, one layer each: layer k hides the classes
    `hidden[k]`, which are placed and drawn as usual (same random draws, same occlusion bookkeeping) but whose
    paint never reaches that layer's `pixels` nor `shown` (its label map of what is visible), so their pixels
    keep whatever lies behind them. `label` is the full scene's label map (it decides redraws); `shown` is
    None when no layer hides anything (then every layer shows `label`).
    """

    rng: np.random.Generator
    size: int
    night: bool
    pixels: np.ndarray = field(init=False)
    label: np.ndarray = field(init=False)
    light: float = field(init=False)
    placed: list[Placed] = field(default_factory=list)
    vehicle_floor: int = 0  # bottom row of the nearest vehicle so far: later vehicles stand nearer
    hidden: tuple[frozenset[str], ...] = (frozenset(),)
    shown: np.ndarray | None = field(init=False)
    hiding: dict[str, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.pixels = np.zeros((len(self.hidden), self.size, self.size), "<u4")
        self.label = np.full((self.size, self.size), CLASS_ID["sky"], np.uint8)
        self.shown = np.repeat(self.label[None], len(self.hidden), 0) if any(self.hidden) else None
        names = set().union(*self.hidden)
        self.hiding = {n: [k for k, h in enumerate(self.hidden) if n in h] for n in names}
        self.light = self.rng.uniform(0.28, 0.4) if self.night else self.rng.uniform(0.85, 1.1)

    def px(self, low: float, high: float | None = None) -> int:
        """A length in pixels: `low` (or uniform in [low, high]) times the image size, at least 1."""
        frac = low if high is None else self.rng.uniform(low, high)
        return max(1, round(frac * self.size))

    def left_edge(self, width: int, k: int) -> int:
        """A random left edge for an object `width` wide that lets about 1/k of it hang off either side."""
        return int(self.rng.integers(-width // k, self.size - (k - 1) * width // k))

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
        cid, word = CLASS_ID[cls], int(color[0]) | int(color[1]) << 8 | int(color[2]) << 16
        if mask is None:
            where: tuple = (Ellipsis,)
        else:
            where = (Ellipsis, mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0])
        self.label[cy0:cy1, cx0:cx1][where] = cid
        keep = self.hiding.get(cls)
        for layers, value in ((self.pixels, word), (self.shown, cid)):
            if layers is None:
                continue
            window = layers[:, cy0:cy1, cx0:cx1]
            saved = window[keep] if keep else None
            window[where] = value
            if keep:
                window[keep] = saved

    def rgb(self) -> np.ndarray:
        """The layers' images as a (layers, size, size, 3) uint8 RGB array."""
        return np.ascontiguousarray(self.pixels.view(np.uint8).reshape(*self.pixels.shape, 4)[..., :3])

    def labels(self) -> np.ndarray:
        """The layers' label maps of what is visible, (layers, size, size) uint8."""
        return self.shown if self.shown is not None else np.repeat(self.label[None], len(self.hidden), 0)

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

    def place(
        self, sample: Callable[[], tuple[Any, list[Rect]]], required: bool, opacity: float = 1.0
    ) -> Any:
        """Choose where to draw an optional object so it hides at most half of any object drawn before.

        `sample()` proposes (params, rects); up to 12 proposals are tried. An optional extra instance that
        does not fit is dropped (None); a required one takes the least-occluding proposal.
        """
        best: tuple[float, Any, list[Rect], list[float]] | None = None
        for _ in range(12):
            params, rects = sample()
            rects = [self._clip(r) for r in rects]
            hits = [opacity * overlap(rects, p.rects) for p in self.placed]
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
        self.placed.append(Placed(rects, float(sum(area(r) for r in rects))))
        return params

    def populate(
        self,
        sample: Callable[[], tuple[tuple, list[Rect]]],
        paint: Callable[..., None],
        extras: Extras | None = None,
        opacity: float = 1.0,
    ) -> None:
        """Place and paint one required instance of an object, then `extras(rng)` optional ones.

        `paint` takes the params of a placed proposal; an extra instance that does not fit is not drawn.
        """
        paint(*self.place(sample, required=True, opacity=opacity))
        for _ in range(extras(self.rng) if extras else 0):
            params = self.place(sample, required=False, opacity=opacity)
            if params is not None:
                paint(*params)

    def _clip(self, r: Rect) -> Rect:
        """The part of a rectangle inside the image."""
        s = self.size
        return (min(max(r[0], 0), s), min(max(r[1], 0), s), min(max(r[2], 0), s), min(max(r[3], 0), s))


def palette(codes: str) -> list[tuple[int, int, int]]:
    """Colours from space-separated hex codes ("c8beaa a55541 ..."): a palette on one line."""
    return [(int(c[:2], 16), int(c[2:4], 16), int(c[4:], 16)) for c in codes.split()]


def up_to(n: int) -> Extras:
    """Extra instances: uniformly 0 to n."""
    return lambda rng: int(rng.integers(0, n + 1))


def maybe_one(p: float) -> Extras:
    """Extra instances: one with probability p, else none."""
    return lambda rng: int(rng.random() < p)


def shade(color: Color, factor: float) -> Color:
    """A colour scaled by `factor` (darker below 1), clipped to the uint8 range."""
    return np.clip(color * factor, 0, 255).astype(np.uint8)


def area(r: Rect) -> int:
    """The area of a rectangle (0 when empty)."""
    return max(0, r[2] - r[0]) * max(0, r[3] - r[1])


def overlap(a: list[Rect], b: list[Rect]) -> float:
    """Total area where the rectangles of `a` and of `b` intersect."""
    total = 0
    for ax0, ay0, ax1, ay1 in a:
        for bx0, by0, bx1, by1 in b:
            w, h = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
            if w > 0 and h > 0:
                total += w * h
    return float(total)
