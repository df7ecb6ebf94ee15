"""One street scene: the shared backdrop, then the present optional classes back to front, with film grain.

A layout in which nearer objects hid a present class is redrawn, so "the image contains p" and "the label map
contains p" are the same event, which the planted-frequency statistics rely on.

Counterfactual scenes (docs/causal.md): the backdrop and every optional class draw from their own random
stream, keyed by the image's seed and the class, so an object's shape, colour and place never depend on which
other objects are present. A scene rendered with `remove` places and draws every object exactly as the full
scene does, but the removed classes' paint is dropped: their pixels show what lies behind them (and the label
map says so), every other pixel is the full scene's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from citylens.data.synthetic import roadside, street
from citylens.data.synthetic.backdrop import draw_facades, draw_ground, draw_sky, draw_skyline
from citylens.data.synthetic.canvas import Canvas, Layout
from citylens.data.synthetic.config import ALWAYS_DRAWN, CLASS_ID, OPTIONAL, check_size, renderable_classes

_DRAWERS: dict[str, Callable[[Canvas, Layout], None]] = {
    "skyscraper": roadside.draw_skyscraper,
    "awning": roadside.draw_awning,
    "signboard": roadside.draw_signboard,
    "grass": roadside.draw_grass,
    "earth": roadside.draw_earth,
    "fence": roadside.draw_fence,
    "tree": street.draw_tree,
    "pole": street.draw_pole,
    "streetlight": street.draw_streetlight,
    "person": street.draw_person,
    "bus": street.draw_bus,
    "car": street.draw_car,
}
assert tuple(_DRAWERS) == OPTIONAL

_ATTEMPTS = 6  # redraws (new layout, same random stream) when a nearer object hid a present one


@functools.lru_cache(maxsize=8)
def _grain(size: int) -> np.ndarray:
    """A fixed film-grain tile (2*size square, packed like the canvas), shifted per image.

    XOR with 0..7 in each of R, G, B moves a value by at most 7 and never overflows: one cheap integer pass
    that keeps surfaces from being perfectly flat.
    """
    noise = np.random.default_rng(1905_01932).integers(0, 8, (2 * size, 2 * size), dtype=np.uint32)
    return (noise | noise << 8 | noise << 16).astype("<u4")


def stream(seed: np.random.SeedSequence, key: int) -> np.random.Generator:
    """The random stream `key` of a scene: 0 the backdrop, 1 + i the i-th optional class (OPTIONAL order)."""
    return np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, key)))


def _draw_scene(
    backdrop: np.random.Generator,
    streams: Mapping[str, np.random.Generator],
    size: int,
    present: frozenset[str],
    night: bool,
    hidden: tuple[frozenset[str], ...],
) -> Canvas:
    """One layout: the backdrop, then the present optional classes back to front, each from its own stream;
    one layer per entry of `hidden` (the classes that layer leaves out)."""
    c = Canvas(backdrop, size, night, hidden=hidden)
    ground = c.px(0.5, 0.6)
    lay = Layout(ground, ground + c.px(0.1, 0.15), present)
    for draw in (draw_sky, draw_skyline, draw_facades, draw_ground):
        draw(c, lay)
    for name in OPTIONAL:
        if name in present:
            c.rng = streams[name]
            _DRAWERS[name](c, lay)
    c.rng = backdrop
    return c


def render_scene(
    seed: np.random.SeedSequence | int,
    size: int,
    objects: Mapping[str, bool] | Iterable[str],
    night: bool = False,
    remove: Iterable[str] = frozenset(),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one street scene containing exactly the given optional classes, optionally with some removed.

    Each present class is visible in the full scene's label map (at least 0.1% of the pixels): a layout where
    nearer objects hid one is redrawn. Returns the (size, size, 3) uint8 RGB image and its (size, size) uint8
    ADE20K label map (every pixel labelled). `objects` is a set of optional class names, or a mapping
    name -> present. `remove`: optional classes to leave out of this rendering of the same scene (see the
    module docstring); a removed class that is not present changes nothing.
    """
    images, labels = render_variants(seed, size, objects, night, [remove])
    return images[0], labels[0]


def render_variants(
    seed: np.random.SeedSequence | int,
    size: int,
    objects: Mapping[str, bool] | Iterable[str],
    night: bool = False,
    removes: Sequence[Iterable[str]] = (frozenset(),),
) -> tuple[np.ndarray, np.ndarray]:
    """`render_scene` once per entry of `removes`, drawn in one pass: (len(removes), size, size, 3) uint8
    images and (len(removes), size, size) uint8 label maps, each equal to `render_scene(..., remove=entry)`.

    The scene's Python work (sampling, placement) is done once for all renderings, which makes all the
    single-object counterfactuals of an image cost about as much as two renderings.
    """
    seed = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    present = {k for k, v in objects.items() if v} if isinstance(objects, Mapping) else set(objects)
    unknown = present - set(OPTIONAL) - set(ALWAYS_DRAWN)
    if unknown:
        raise ValueError(
            f"objects: {sorted(unknown)} not renderable; renderable: {list(renderable_classes())}"
        )
    removes = [frozenset(r) for r in removes]
    wrong = set().union(*removes) - set(OPTIONAL)
    if wrong:
        raise ValueError(f"remove: {sorted(wrong)} cannot be removed; removable: {list(OPTIONAL)}")
    if not removes:
        raise ValueError("removes: need at least one rendering (an empty set = the full scene)")
    check_size(size)
    present &= set(OPTIONAL)
    backdrop = stream(seed, 0)
    streams = {name: stream(seed, 1 + i) for i, name in enumerate(OPTIONAL) if name in present}
    wanted = np.array([CLASS_ID[name] for name in present | set(ALWAYS_DRAWN)])
    hidden = tuple(r & present for r in removes)
    for _ in range(_ATTEMPTS):
        c = _draw_scene(backdrop, streams, size, frozenset(present), night, hidden)
        if (np.bincount(c.label.ravel(), minlength=256)[wanted] >= max(4, size * size // 1000)).all():
            break
    dy, dx = backdrop.integers(0, size, 2)
    c.pixels ^= _grain(size)[dy : dy + size, dx : dx + size]
    return c.rgb(), c.labels()
