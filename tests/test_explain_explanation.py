"""Explanations cut out of masks: the threshold, blacked-out pixels, heat-map overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from citylens.explain import explain, overlay, validate_threshold


@pytest.mark.parametrize("bad", [-0.01, 1.5, "0.5", None, float("nan"), True, [0.5]])
def test_threshold_validation_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="analysis.threshold"):
        validate_threshold(bad)


@pytest.mark.parametrize("good", [0, 1, 0.5, np.float32(0.25)])
def test_threshold_validation_accepts(good: object) -> None:
    assert validate_threshold(good) == float(good)


def test_explain_blacks_out_exactly_the_pixels_below_threshold() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    masks = rng.random((2, 8, 8)).astype(np.float32)
    masks[0, 0, 0] = 0.4
    out = explain(images, masks, 0.4)
    keep = masks >= 0.4
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(out[keep], images[keep]) and not out[~keep].any()
    assert np.array_equal(explain(images, torch.from_numpy(masks), 0.4), out)

    tensor_images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 + 0.01
    tensor_out = explain(tensor_images, torch.from_numpy(masks), 0.4)
    tensor_keep = torch.from_numpy(keep)[:, None].expand_as(tensor_images)
    assert torch.equal(tensor_out[tensor_keep], tensor_images[tensor_keep])
    assert not tensor_out[~tensor_keep].any()
    assert np.array_equal(explain(images, masks, 0.0), images)
    with pytest.raises(ValueError, match="analysis.threshold"):
        explain(images, masks, 2)
    with pytest.raises(ValueError, match="do not match"):
        explain(images, masks[:, :4], 0.5)


def test_overlay_blends_heatmap_over_image() -> None:
    image = np.full((6, 5, 3), 100, dtype=np.uint8)
    mask = np.linspace(0, 1, 30, dtype=np.float32).reshape(6, 5)
    out = overlay(image, mask)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(overlay(image, mask, alpha=0.0), image)
    assert not np.array_equal(out, image)
    from matplotlib import colormaps

    reference = 0.5 * image + 0.5 * colormaps["jet"](mask)[..., :3] * 255
    assert np.abs(out - reference).max() <= 1.0
    batch = overlay(np.stack([image, image[::-1]]), np.stack([mask, mask]))
    assert np.array_equal(batch[0], out) and np.array_equal(batch[1], overlay(image[::-1], mask))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, mask, alpha=1.5)
