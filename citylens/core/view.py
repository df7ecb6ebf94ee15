"""The analysis view: the one mapping from an image file to the pixels the classifier sees at test time.

Images are resized so the shorter side equals `size` (bilinear, antialiased) and centre-cropped to
size x size. Label maps go through the same geometry with nearest-neighbour resampling, so mask pixel
(y, x) and label pixel (y, x) are the same scene point.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

# ImageNet statistics, so optional ImageNet-pretrained torchvision weights see the inputs they expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) analysis views -> normalised float32 network input, on the images' device."""
    return (images.float() / 255 - MEAN.to(images.device)) / STD.to(images.device)


def _geometry(width: int, height: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Resized (w, h) so the shorter side is `size`, and the centre crop box in the resized image."""
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return (new_w, new_h), (left, top, left + size, top + size)


def analysis_view(image: Image.Image, size: int) -> np.ndarray:
    """Return the image in the analysis view as a (size, size, 3) uint8 RGB array."""
    image = image.convert("RGB")
    new_size, box = _geometry(image.width, image.height, size)
    if new_size != image.size:
        image = image.resize(new_size, Image.BILINEAR, reducing_gap=None)
    return np.asarray(image.crop(box), dtype=np.uint8)


def label_view(label: np.ndarray, size: int) -> np.ndarray:
    """Bring an (H, W) label map into the analysis view with nearest-neighbour resampling (uint8)."""
    height, width = label.shape
    new_size, box = _geometry(width, height, size)
    image = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))
    if new_size != image.size:
        image = image.resize(new_size, Image.NEAREST)
    return np.asarray(image.crop(box), dtype=np.uint8)


# Scales of `surround_fill`, as multiples of its sigma: the finest whose Gaussian weight of the surroundings
# reaches SURROUND_MIN_WEIGHT at a pixel fills it, so thin objects take their immediate neighbours' colours;
# pixels deeper inside a large object than both reach take the mean colour around the object.
SURROUND_SCALES = (0.25, 1.0)
SURROUND_MIN_WEIGHT = 0.05
# Pixels within this distance of a mask (a square neighbourhood) are not taken as its surroundings: an
# object's edge pixels mix its colour with its neighbours' (resampling, JPEG), and as sources they would paint
# its outline back in. Measured on the demo's occlusion (docs/results.md): 0 px rho 0.81, P@k = 1 in 11 of 16;
# 1 px rho 0.85, 12 of 16.
SURROUND_RING = 1


def surround_fill(image: np.ndarray, masks: np.ndarray, sigma: float) -> np.ndarray:
    """The (H, W, C) image once per (K, H, W) mask, (K, H, W, C) float64, with the mask's pixels replaced by
    the colours around the mask: normalised convolution, G * (image outside) / G * (outside), at the finest
    of SURROUND_SCALES x `sigma` pixels where the outside weighs at least SURROUND_MIN_WEIGHT, else the mean
    colour outside the mask. The surroundings leave out a ring of SURROUND_RING pixels around the mask (all of
    the outside where the ring would take it all). A mask that covers the whole image leaves it as it is.

    Unlike a mean-colour or blurred fill it leaves no silhouette of the object (a fence filled with the grey
    mean is still a fence-shaped patch), so removing an object this way is closer to the scene without it."""
    if image.ndim != 3 or masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"need an (H, W, C) image and (K, H, W) masks, got {image.shape} and {masks.shape}")
    image = image.astype(np.float64)
    inside = masks.astype(bool)
    ring = np.ones((1, 2 * SURROUND_RING + 1, 2 * SURROUND_RING + 1), dtype=bool)
    source = ~ndimage.binary_dilation(inside, structure=ring)
    bare = ~source.any(axis=(1, 2))
    source[bare] = ~inside[bare]
    outside = source.astype(np.float64)
    out = np.repeat(image[None], len(inside), axis=0)
    todo = inside & outside.any(axis=(1, 2))[:, None, None]
    for scale in SURROUND_SCALES:
        s = scale * sigma
        weight = ndimage.gaussian_filter(outside, (0, s, s), mode="reflect")
        total = ndimage.gaussian_filter(image[None] * outside[..., None], (0, s, s, 0), mode="reflect")
        take = todo & (weight >= SURROUND_MIN_WEIGHT)
        out[take] = total[take] / weight[take][:, None]
        todo &= ~take
    for k in np.flatnonzero(todo.any(axis=(1, 2))):
        out[k][todo[k]] = image[source[k]].mean(0)
    return out
