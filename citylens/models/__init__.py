"""City classifiers: the four architectures and the LightningModule that trains them."""

from citylens.models.build import ARCHITECTURES, DEFAULT_TARGET_LAYERS, build_model, resolve_layer
from citylens.models.module import CityClassifier

__all__ = ["ARCHITECTURES", "DEFAULT_TARGET_LAYERS", "CityClassifier", "build_model", "resolve_layer"]
