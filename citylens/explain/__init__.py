"""Explaining predictions: batched Grad-CAM masks, the visual explanations cut out of them, the mask store."""

from citylens.explain.explanation import explain, overlay, validate_threshold
from citylens.explain.gradcam import GradCAM, upsample_masks
from citylens.explain.store import MaskStore, StoreError, open_store

__all__ = [
    "GradCAM",
    "MaskStore",
    "StoreError",
    "explain",
    "open_store",
    "overlay",
    "upsample_masks",
    "validate_threshold",
]
