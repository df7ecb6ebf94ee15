"""The analysis view of a photo, the label view of its label map, and the surround fill of an object."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from citylens.core.view import analysis_view, label_view, surround_fill


def test_analysis_view_and_label_view_share_geometry():
    image = np.zeros((60, 100, 3), np.uint8)
    label = np.zeros((60, 100), np.uint8)
    image[:, 50:] = 255
    label[:, 50:] = 7
    view = analysis_view(Image.fromarray(image), 30)
    labels = label_view(label, 30)
    assert view.shape == (30, 30, 3) and labels.shape == (30, 30)
    assert set(np.unique(labels)) == {0, 7}
    bright = view[..., 0] > 127
    assert (bright == (labels == 7)).mean() > 0.95


def test_surround_fill_takes_the_colours_around_the_object() -> None:
    """Left half red, right half blue: filling the right half gives red everywhere in it (the finest scale
    near the boundary, the widest further in); pixels outside are untouched; nothing around: unchanged."""
    image = np.zeros((16, 32, 3))
    image[:, :16, 0] = 200.0
    image[:, 16:, 2] = 200.0
    inside = np.zeros((16, 32), bool)
    inside[:, 16:] = True
    out = surround_fill(image, inside[None], sigma=3.2)[0]
    np.testing.assert_allclose(out[inside], np.tile([200.0, 0.0, 0.0], (inside.sum(), 1)), atol=1e-6)
    assert np.array_equal(out[~inside], image[~inside])
    # A square far from its surroundings at the finest scale falls back to wider ones, never to NaN.
    inside = np.zeros((16, 32), bool)
    inside[2:14, 2:30] = True
    noise = np.random.default_rng(0).uniform(0, 255, (16, 32, 3))
    out = surround_fill(noise, np.stack([inside, ~inside]), sigma=0.5)
    assert np.isfinite(out).all()
    around = ~ndimage.binary_dilation(inside, np.ones((3, 3), bool))  # the outside less the 1 px ring
    np.testing.assert_allclose(out[0][6:10, 12:20], np.broadcast_to(noise[around].mean(0), (4, 8, 3)))
    everything = np.ones((1, 16, 32), bool)
    assert np.array_equal(surround_fill(image, everything, 3.2)[0], image)
    with pytest.raises(ValueError, match="masks"):
        surround_fill(image, inside[None, :8], 3.2)


def test_surround_fill_leaves_out_the_ring_of_mixed_edge_pixels() -> None:
    """A green bar with a 1 px fringe of half green (as resampling or JPEG leave at its edge) on grey: filled,
    the bar is grey; with the fringe as a source (SURROUND_RING = 0) it would come back greenish."""
    image = np.full((24, 24, 3), 100.0)
    image[:, 9:15] = [100.0, 150.0, 100.0]
    image[:, 10:14] = [0.0, 200.0, 0.0]
    bar = np.zeros((24, 24), bool)
    bar[:, 10:14] = True
    out = surround_fill(image, bar[None], sigma=2.4)[0]
    np.testing.assert_allclose(out[bar], np.full((bar.sum(), 3), 100.0), atol=1e-6)
