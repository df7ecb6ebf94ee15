"""Datasets: synthetic cities, folder and NetVLAD readers, the view cache and the data module.

Names are loaded on first use, so `import citylens.data.records` (or the analysis library) does not import
pytorch_lightning with the data module.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CityDataModule": "citylens.data.datamodule",
    "FolderCityData": "citylens.data.datamodule",
    "SyntheticCityData": "citylens.data.datamodule",
    "PittsTokyoData": "citylens.data.netvlad",
    "ImageRecord": "citylens.data.records",
    "to_input": "citylens.data.view",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'citylens.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
