"""Scene rendering: shapes, every renderable class drawn when present, unknown objects refused."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.core.ade20k import UNLABELLED, class_index
from citylens.data.synthetic import (
    ALWAYS_DRAWN,
    OPTIONAL,
    render_scene,
    renderable_classes,
)


@pytest.mark.parametrize("size", [48, 224])
def test_scene_shapes_dtypes_and_labels(label_classes, size: int) -> None:
    image, label = render_scene(0, size, {"car": True, "tree": True, "bus": False}, night=True)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert label.shape == (size, size) and label.dtype == np.uint8
    assert not (label == UNLABELLED).any()
    assert label_classes(label) >= {"car", "tree", *ALWAYS_DRAWN}
    assert "bus" not in label_classes(label)
    assert set(np.unique(label)) <= {class_index(n) for n in renderable_classes()}


@pytest.mark.parametrize("name", renderable_classes())
def test_every_renderable_class_is_drawn_when_present(label_classes, name: str) -> None:
    objects = set() if name in ALWAYS_DRAWN else {name}
    for seed in range(3):
        for size in (48, 96):
            _, label = render_scene(seed, size, objects, night=seed == 1)
            assert label_classes(label) == set(ALWAYS_DRAWN) | objects


def test_all_classes_together_stay_visible(label_classes) -> None:
    for seed in range(10):
        _, label = render_scene(seed, 64, set(OPTIONAL))
        assert label_classes(label) == set(renderable_classes())


def test_unknown_object_is_rejected() -> None:
    with pytest.raises(ValueError, match="spaceship"):
        render_scene(0, 64, {"spaceship"})


def test_only_optional_classes_can_be_removed() -> None:
    with pytest.raises(ValueError, match="building"):
        render_scene(0, 48, {"car"}, remove={"building"})
