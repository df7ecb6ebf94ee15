"""The analysis view of a photo and the label view of its label map."""

from __future__ import annotations

import numpy as np
from PIL import Image

from citylens.core.view import analysis_view, label_view


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
