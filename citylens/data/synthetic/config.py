"""The generator's class vocabulary and file settings, and validation of a city -> planted-classes config."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from citylens.core.ade20k import class_index

# 2: one random stream per object class per image (counterfactual scenes, docs/causal.md).
GENERATOR_VERSION = 2
JPEG_QUALITY = 90

ALWAYS_DRAWN: tuple[str, ...] = ("sky", "building", "road", "sidewalk")

# Probability that an image of any city contains the class when no city plants it.
BASE_RATES: dict[str, float] = {
    "skyscraper": 0.15,
    "awning": 0.3,
    "signboard": 0.25,
    "grass": 0.3,
    "earth": 0.15,
    "fence": 0.2,
    "tree": 0.6,
    "pole": 0.5,
    "streetlight": 0.4,
    "person": 0.5,
    "bus": 0.15,
    "car": 0.5,
}
# Back-to-front drawing order of the optional classes (the keys above are in this order).
OPTIONAL: tuple[str, ...] = tuple(BASE_RATES)

DEFAULT_CITIES: dict[str, dict[str, float]] = {
    "tokyo": {"signboard": 0.9, "fence": 0.9},
    "pittsburgh": {"skyscraper": 0.9, "earth": 0.9},
}

CLASS_ID: dict[str, int] = {name: class_index(name) for name in ALWAYS_DRAWN + OPTIONAL}
_CITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def renderable_classes() -> tuple[str, ...]:
    """ADE20K class names the generator can draw: the always-drawn ones, then the optional ones."""
    return ALWAYS_DRAWN + OPTIONAL


def normalize_cities(cities: Mapping[str, Any], where: str = "data.cities") -> dict[str, dict[str, float]]:
    """Validate a city -> {class: probability} config and return it as plain dicts of floats.

    A city's value may also be {"planted": {class: probability}} (the config file's shape); errors name the
    offending key as it is spelled in the config, e.g. `data.cities.tokyo.planted.spaceship`.
    """
    if not isinstance(cities, Mapping) or len(cities) < 2:
        raise ValueError(f"{where}: need at least two cities, got {list(cities or [])}")
    result: dict[str, dict[str, float]] = {}
    for city, planted in cities.items():
        key = f"{where}.{city}"
        if not isinstance(city, str) or not _CITY_NAME.fullmatch(city):
            raise ValueError(f"{key}: a city name must be a plain file name ([A-Za-z0-9_.-])")
        if isinstance(planted, Mapping) and "planted" in planted:
            planted, key = planted["planted"], f"{key}.planted"
        if planted is None:
            planted = {}
        if not isinstance(planted, Mapping):
            raise ValueError(f"{key}: expected a mapping of class name -> probability, got {planted!r}")
        result[city] = {name: _probability(f"{key}.{name}", name, p) for name, p in planted.items()}
    return result


def _probability(key: str, name: str, value: Any) -> float:
    """Check one planted entry: a plantable class and a probability in [0, 1]."""
    if name in ALWAYS_DRAWN:
        raise ValueError(f"{key}: always drawn, cannot be planted; plantable: {list(OPTIONAL)}")
    if name not in OPTIONAL:
        raise ValueError(f"{key}: not a renderable class; renderable: {list(renderable_classes())}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{key}: probability must be a number in [0, 1], got {value!r}")
    return float(value)


def check_rate(name: str, value: float) -> None:
    """Reject a rate outside [0, 1], naming the setting."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be in [0, 1], got {value!r}")


def check_size(size: int) -> None:
    """Reject an image size too small for the scene grammar's proportions."""
    if size < 16:
        raise ValueError(f"size: must be at least 16 pixels, got {size}")
