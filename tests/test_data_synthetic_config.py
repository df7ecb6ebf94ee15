"""The cities config: bad entries name their key; unknown classes list the renderable ones."""

from __future__ import annotations

import re

import pytest

from citylens.data.synthetic import (
    normalize_cities,
)


@pytest.mark.parametrize(
    ("cities", "key"),
    [
        ({"tokyo": {"planted": {"spaceship": 0.5}}, "pgh": {}}, "data.cities.tokyo.planted.spaceship"),
        ({"tokyo": {"spaceship": 0.5}, "pgh": {}}, "data.cities.tokyo.spaceship"),
        ({"tokyo": {"sky": 0.5}, "pgh": {}}, "data.cities.tokyo.sky"),
        ({"tokyo": {"fence": 1.5}, "pgh": {}}, "data.cities.tokyo.fence"),
        ({"tokyo": {"fence": "often"}, "pgh": {}}, "data.cities.tokyo.fence"),
        ({"tokyo": {"fence": 0.9}}, "data.cities"),
        ({"to/kyo": {}, "pgh": {}}, "data.cities.to/kyo"),
    ],
)
def test_bad_config_names_the_key(cities: dict, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key)):
        normalize_cities(cities)


def test_unknown_class_error_lists_renderable() -> None:
    with pytest.raises(ValueError, match=r"not a renderable class; renderable: \[.*'signboard'"):
        normalize_cities({"tokyo": {"planted": {"spaceship": 0.5}}, "pgh": {}})
