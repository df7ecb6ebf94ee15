"""The four architectures with their explainer layer presets, and the LightningModule that trains them.

Names are loaded on first use, so the network builders can be imported without pytorch_lightning.
"""

from __future__ import annotations

from citylens.lazy import lazy_names

_WHERE = {
    "ARCHITECTURES": "citylens.models.build",
    "DEFAULT_TARGET_LAYERS": "citylens.models.build",
    "LAYER_PRESETS": "citylens.models.build",
    "resolve_target_layer": "citylens.models.build",
    "build_model": "citylens.models.build",
    "resolve_layer": "citylens.models.build",
    "CityClassifier": "citylens.models.module",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE)
