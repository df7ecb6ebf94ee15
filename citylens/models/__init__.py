"""The four architectures with their explainer layer presets, and the LightningModule that trains them.

Names are loaded on first use, so the network builders can be imported without pytorch_lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'citylens.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
