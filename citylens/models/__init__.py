"""The four architectures and the LightningModule that trains them (layer presets: citylens.core.layers).

Names are loaded on first use, so the network builders can be imported without pytorch_lightning.
"""

from __future__ import annotations

from citylens.core.lazy import lazy_names

_WHERE = {
    "build_model": "citylens.models.build",
    "CityClassifier": "citylens.models.module",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE)
