"""Datasets: synthetic cities, folder and NetVLAD readers, the view cache and the data module.

Names are loaded on first use, so `import citylens.data.records` (or the analysis library) does not import
pytorch_lightning with the data module.
"""

from __future__ import annotations

from citylens.lazy import lazy_names

_WHERE = {
    "CityDataModule": "citylens.data.datamodule",
    "FolderCityData": "citylens.data.datamodule",
    "SyntheticCityData": "citylens.data.datamodule",
    "PittsTokyoData": "citylens.data.netvlad",
    "ImageRecord": "citylens.data.records",
    "to_input": "citylens.data.view",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE)
