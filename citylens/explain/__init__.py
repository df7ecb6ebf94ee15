"""Explaining predictions: batched CAM masks (five methods), captum attributions (pixels and objects),
explanations cut out of them, the mask store."""

from citylens.explain.attribution import Attribution
from citylens.explain.cam import BaseCAM, upsample_masks
from citylens.explain.explanation import explain, overlay, validate_threshold
from citylens.explain.methods import (
    CAMS,
    EXPLAINERS,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    LayerCAM,
    ObjectShapley,
    Occlusion,
    RenderedShapley,
    SmoothGrad,
    XGradCAM,
    build_explainer,
    explainer_name,
)
from citylens.explain.store import MaskStore, StoreError, open_store

__all__ = [
    "CAMS",
    "EXPLAINERS",
    "Attribution",
    "BaseCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "InputXGradient",
    "IntegratedGradients",
    "LayerCAM",
    "MaskStore",
    "ObjectShapley",
    "Occlusion",
    "RenderedShapley",
    "SmoothGrad",
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
