"""Explaining predictions: batched CAM masks (five methods), explanations cut out of them, the mask store."""

from citylens.explain.cam import BaseCAM, upsample_masks
from citylens.explain.explanation import explain, overlay, validate_threshold
from citylens.explain.methods import (
    EXPLAINERS,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
    build_explainer,
    explainer_name,
)
from citylens.explain.store import MaskStore, StoreError, open_store

__all__ = [
    "EXPLAINERS",
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "MaskStore",
    "StoreError",
    "XGradCAM",
    "build_explainer",
    "explainer_name",
    "explain",
    "open_store",
    "overlay",
    "upsample_masks",
    "validate_threshold",
]
