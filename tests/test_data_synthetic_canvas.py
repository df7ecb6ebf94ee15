"""The drawing canvas: packed pixels, exact labels, hidden layers and occlusion-aware placement
(citylens/data/synthetic/canvas.py)."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.core.ade20k import class_index
from citylens.data.synthetic import canvas as cv
from citylens.data.synthetic.canvas import Canvas, Placed

RED = np.array([200, 10, 30], np.uint8)
BLUE = np.array([5, 20, 240], np.uint8)
SKY, CAR, TREE = class_index("sky"), class_index("car"), class_index("tree")


def _canvas(size: int = 16, night: bool = False, seed: int = 0, hidden=(frozenset(),)) -> Canvas:
    return Canvas(np.random.default_rng(seed), size, night, hidden=hidden)


def test_a_new_canvas_is_black_sky_with_its_lighting():
    c = _canvas(12)
    assert c.pixels.shape == (1, 12, 12) and c.pixels.dtype == np.dtype("<u4") and not c.pixels.any()
    assert (c.label == SKY).all() and c.label.dtype == np.uint8
    assert c.shown is None and c.hiding == {}
    assert 0.85 <= c.light <= 1.1
    assert 0.28 <= _canvas(night=True).light <= 0.4
    rgb = c.rgb()
    assert rgb.shape == (1, 12, 12, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous


def test_px_is_a_fraction_of_the_size_at_least_one_pixel():
    c = _canvas(100)
    assert c.px(0.25) == 25 and c.px(0.001) == 1 and c.px(0.0) == 1
    lengths = [c.px(0.1, 0.2) for _ in range(200)]
    assert min(lengths) >= 10 and max(lengths) <= 20 and len(set(lengths)) > 5


def test_left_edge_lets_about_one_kth_hang_off():
    c = _canvas(100)
    edges = [c.left_edge(40, 4) for _ in range(500)]
    assert min(edges) >= -10 and max(edges) < 100 - 30
    assert min(edges) < -5 and max(edges) > 60


def test_rect_paints_colour_and_class_clipped_to_the_image():
    c = _canvas(8)
    c.rect(-3, 6, 4, 20, RED, "car")
    rgb = c.rgb()[0]
    assert (c.label[6:, :4] == CAR).all() and (c.label[:6] == SKY).all() and (c.label[:, 4:] == SKY).all()
    assert (rgb[6:, :4] == RED).all() and not rgb[:6].any()
    c.rect(10, 0, 12, 4, BLUE, "tree")  # wholly outside: nothing
    c.rect(3, 3, 3, 5, BLUE, "tree")  # empty
    assert not (c.label == TREE).any()


def test_rect_with_a_mask_paints_only_its_true_pixels():
    c = _canvas(6)
    mask = np.array([[1, 0, 1], [0, 1, 0]], bool)
    c.rect(-1, 4, 2, 6, RED, "car", mask)  # the mask's first column falls off the left edge
    expected = np.zeros((6, 6), bool)
    expected[4, 1] = True  # mask[0, 2]
    expected[5, 0] = True  # mask[1, 1]
    np.testing.assert_array_equal(c.label == CAR, expected)
    np.testing.assert_array_equal((c.rgb()[0] == RED).all(-1), expected)


def test_a_hidden_class_is_placed_but_its_paint_stays_off_its_layer():
    c = _canvas(8, hidden=(frozenset(), frozenset({"car"}), frozenset({"car", "tree"})))
    assert c.hiding == {"car": [1, 2], "tree": [2]}
    c.rect(0, 0, 8, 8, BLUE, "tree")
    c.rect(2, 2, 6, 6, RED, "car")
    rgb, labels = c.rgb(), c.labels()
    # The full scene's label map (which decides redraws) has both.
    assert (c.label[2:6, 2:6] == CAR).all() and c.label[0, 0] == TREE
    assert (rgb[0, 2:6, 2:6] == RED).all() and (labels[0, 2:6, 2:6] == CAR).all()
    # Layer 1 shows the tree behind the car, and says so.
    assert (rgb[1] == BLUE).all() and (labels[1] == TREE).all()
    # Layer 2 hides both: black sky.
    assert not rgb[2].any() and (labels[2] == SKY).all()


def test_labels_without_hidden_layers_repeat_the_label_map():
    c = _canvas(4, hidden=(frozenset(), frozenset()))
    c.rect(0, 0, 2, 2, RED, "car")
    labels = c.labels()
    assert labels.shape == (2, 4, 4) and (labels == c.label).all()


def test_tint_glow_and_pick():
    c = _canvas()
    c.light = 0.5
    colours = np.array([c.tint((100, 200, 250), 10) for _ in range(100)])
    assert colours.dtype == np.uint8
    assert (colours[:, 0] >= 45).all() and (colours[:, 0] <= 55).all()
    assert (colours[:, 2] >= 120).all() and (colours[:, 2] <= 130).all()
    glows = np.array([c.glow((250, 0, 128), 12) for _ in range(100)])  # not dimmed, clipped to 0..255
    assert glows[:, 0].min() >= 238 and glows[:, 1].max() <= 12 and glows[:, 2].min() >= 116
    palette = [(1, 2, 3), (4, 5, 6)]
    assert {c.pick(palette) for _ in range(50)} == set(palette)


def test_ellipse_fills_the_pixels_whose_centres_lie_inside():
    c = _canvas(32)
    c.ellipse(16, 16, 8, 4, RED, "car")
    ys, xs = np.indices((32, 32)) + 0.5
    inside = ((ys - 16) / 4) ** 2 + ((xs - 16) / 8) ** 2 <= 1
    np.testing.assert_array_equal(c.label == CAR, inside)
    assert abs(inside.sum() - np.pi * 8 * 4) < 10


def test_trapezoid_widens_from_top_to_bottom_and_stripes():
    c = _canvas(20)
    c.trapezoid(0, 10, (8, 12), (0, 20), RED, "car")
    widths = (c.label == CAR).sum(axis=1)
    assert widths[0] == 4 + 2 * 0  # row 0's centre (t = 0.05): bounds 7.6..12.4 -> pixels 8..11
    assert (np.diff(widths[:10]) >= 0).all() and widths[9] >= 19 and not widths[10:].any()
    striped = _canvas(20)
    striped.trapezoid(0, 4, (0, 20), (0, 20), RED, "car", stripe=3)
    row = striped.label[0] == CAR
    assert row.tolist() == [(x // 3) % 2 == 1 for x in range(20)]


def test_place_hides_at_most_the_limit_of_earlier_objects():
    c = _canvas(100)
    c.placed.append(Placed([(0, 0, 10, 10)], 100.0))
    proposals = iter([("over", [(0, 0, 10, 8)]), ("beside", [(50, 50, 60, 60)])])
    assert c.place(lambda: next(proposals), required=False) == "beside"
    assert c.placed[0].covered == 0 and c.placed[1].rects == [(50, 50, 60, 60)] and c.placed[1].area == 100


def test_place_accepts_up_to_the_limit_and_books_what_it_covers():
    c = _canvas(100)
    c.placed.append(Placed([(0, 0, 10, 10)], 100.0))
    assert c.place(lambda: ("half", [(0, 0, 10, 5)]), required=False) == "half"  # exactly 50%
    assert c.placed[0].covered == 50
    # Anything more over the first object is too much for an optional extra...
    assert c.place(lambda: ("more", [(0, 5, 1, 6)]), required=False) is None
    assert len(c.placed) == 2 and c.placed[0].covered == 50
    # ...but a required one takes the least-occluding proposal, at reduced opacity here.
    # The small proposal covers 2 x 2 px of the first object and 2 x 1 of the second.
    proposals = iter(
        [("big", [(0, 0, 10, 10)]), ("small", [(0, 4, 2, 6)])] + [("big", [(0, 0, 10, 10)])] * 10
    )
    assert c.place(lambda: next(proposals), required=True, opacity=0.5) == "small"
    assert c.placed[0].covered == 50 + 0.5 * 4 and c.placed[1].covered == 0.5 * 2
    assert next(proposals, "used up") == "used up"  # all 12 proposals tried: none fitted


def test_place_clips_proposals_to_the_image():
    c = _canvas(10)
    c.place(lambda: (None, [(-5, -5, 3, 20)]), required=True)
    assert c.placed[0].rects == [(0, 0, 3, 10)] and c.placed[0].area == 30


def test_populate_paints_one_required_and_the_extras_that_fit():
    c = _canvas(100)
    spots = iter([(0, 0), (20, 0), (0, 0), (40, 0)] + [(0, 0)] * 40)
    painted = []

    def sample():
        x, y = next(spots)
        return (x, y), [(x, y, x + 10, y + 10)]

    c.populate(sample, lambda x, y: painted.append((x, y)), extras=lambda rng: 3)
    # The second extra proposal at (0, 0) would hide all of the first object: it is retried elsewhere;
    # the third extra finds only (0, 0) in its 12 proposals and is dropped.
    assert painted == [(0, 0), (20, 0), (40, 0)]
    assert len(c.placed) == 3


def test_small_helpers():
    assert cv.palette("ff0000 00ff80") == [(255, 0, 0), (0, 255, 128)]
    rng = np.random.default_rng(0)
    assert set(cv.up_to(2)(rng) for _ in range(100)) == {0, 1, 2}
    assert set(cv.maybe_one(0.0)(rng) for _ in range(20)) == {0}
    assert set(cv.maybe_one(1.0)(rng) for _ in range(20)) == {1}
    np.testing.assert_array_equal(cv.shade(np.array([100, 200, 250], np.uint8), 1.2), [120, 240, 255])
    assert cv.shade(RED, 0.5).dtype == np.uint8
    assert cv.area((0, 0, 3, 4)) == 12 and cv.area((5, 0, 3, 4)) == 0
    assert cv.overlap([(0, 0, 4, 4), (10, 10, 12, 12)], [(2, 2, 11, 11)]) == 4 + 1
    assert cv.overlap([(0, 0, 2, 2)], [(2, 0, 4, 2)]) == 0.0


@pytest.mark.parametrize("night", [False, True])
def test_the_same_seed_draws_the_same(night):
    def draw(seed: int) -> np.ndarray:
        c = _canvas(16, night=night, seed=seed)
        c.rect(c.px(0.1, 0.5), 0, 16, c.px(0.2, 0.9), c.tint((100, 100, 100)), "car")
        return c.rgb()

    np.testing.assert_array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(3), draw(4))
