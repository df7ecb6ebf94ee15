"""Visual explanations: the pixels whose mask is >= the threshold, the rest blacked out (paper, Sec. 3)."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def validate_threshold(threshold: object) -> float:
    """Return the threshold as a float, or raise ValueError naming the config key when it is not in [0, 1]."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not math.isfinite(float(threshold))
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise ValueError(f"analysis.threshold: must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def explain(
    images: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, threshold: float
) -> np.ndarray | torch.Tensor:
    """Black out (set to 0) every pixel whose mask value is < threshold; the others are kept as they are.

    NumPy images are channels-last (N, H, W, C) (e.g. uint8 RGB), tensors channels-first (N, C, H, W);
    masks are (N, H, W) in either form. The result has the images' type, dtype and device.
    """
    threshold = validate_threshold(threshold)
    if isinstance(images, np.ndarray):
        masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        if images.ndim < 3 or masks.shape != images.shape[:-1]:
            raise ValueError(
                f"images (..., H, W, C) and masks (..., H, W) do not match: {images.shape} vs {masks.shape}"
            )
        return np.where(masks[..., None] >= threshold, images, np.zeros((), dtype=images.dtype))
    if isinstance(images, torch.Tensor):
        masks = torch.as_tensor(masks, device=images.device)
        if images.ndim < 3 or masks.shape != images.shape[:-3] + images.shape[-2:]:
            raise ValueError(
                f"images (..., C, H, W) and masks (..., H, W) do not match: "
                f"{tuple(images.shape)} vs {tuple(masks.shape)}"
            )
        return images.masked_fill((masks < threshold).unsqueeze(-3), 0)
    raise TypeError(f"images must be a numpy array or a torch tensor, got {type(images).__name__}")


def overlay(
    image: np.ndarray, mask: np.ndarray | torch.Tensor, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """Blend a colour-mapped mask over a uint8 (H, W, 3) RGB image for figures; `alpha` weighs the heatmap.

    Batches work too: images (N, H, W, 3) with masks (N, H, W).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if image.dtype != np.uint8 or image.ndim < 3 or image.shape[-1] != 3 or mask.shape != image.shape[:-1]:
        raise ValueError(
            f"overlay needs a uint8 (..., H, W, 3) image and an (..., H, W) mask, got {image.dtype} "
            f"{image.shape} and {mask.shape}"
        )
    # Imported here so that `import citylens.explain` stays light for Grad-CAM users.
    from matplotlib import colormaps

    # The colormap's 256-entry table, indexed as matplotlib does (floor(v * 256), 1.0 -> the last entry), so a
    # batch of thumbnails costs one lookup per pixel instead of matplotlib's float64 pipeline.
    table = colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32) * np.float32(255 * alpha)
    index = np.minimum(np.clip(mask, 0.0, 1.0) * 256, 255).astype(np.uint8)
    blended = image.astype(np.float32) * np.float32(1.0 - alpha) + table[index]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
