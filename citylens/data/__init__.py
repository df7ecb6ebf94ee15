"""Datasets: synthetic cities, folder and NetVLAD readers, the view cache and the data module."""

from citylens.data.datamodule import CityDataModule, FolderCityData, SyntheticCityData, to_input
from citylens.data.netvlad import PittsTokyoData
from citylens.data.records import ImageRecord

__all__ = [
    "CityDataModule",
    "FolderCityData",
    "ImageRecord",
    "PittsTokyoData",
    "SyntheticCityData",
    "to_input",
]
