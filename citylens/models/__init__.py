"""City classifiers: the four architectures, their explainer layer presets, the LightningModule."""

from citylens.models.build import (
    ARCHITECTURES,
    DEFAULT_TARGET_LAYERS,
    LAYER_PRESETS,
    build_model,
    resolve_layer,
    resolve_target_layer,
)
from citylens.models.module import CityClassifier

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_TARGET_LAYERS",
    "LAYER_PRESETS",
    "CityClassifier",
    "build_model",
    "resolve_layer",
    "resolve_target_layer",
]
