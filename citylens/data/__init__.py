"""Datasets: synthetic cities, folder and NetVLAD readers, the view cache and the data module.

Names are loaded on first use, so importing a reader or the analysis library does not import pytorch_lightning
with the data module. Image records and views live in the core layer (citylens.core.records and .view).
"""

from __future__ import annotations

from citylens.core.lazy import lazy_names

_WHERE = {
    "CityDataModule": "citylens.data.datamodule",
    "FolderCityData": "citylens.data.datamodule",
    "SyntheticCityData": "citylens.data.datamodule",
    "PittsTokyoData": "citylens.data.netvlad",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE)
