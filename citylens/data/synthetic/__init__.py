"""Synthetic cities: street scenes from one shared grammar, with exact ADE20K label maps.

Every city is drawn by the same scene grammar (sky, facades, sidewalk, road and optional street furniture);
cities differ only in the probability of a few "planted" classes. A classifier can therefore only tell the
cities apart by the planted objects, which gives the analysis a known ground truth: the object ratios of a
working pipeline must single out the planted classes. The defaults plant what the paper found (Shi et al.
2019): signboards and fences in Tokyo, skyscrapers and earth in Pittsburgh.

Scenes are drawn with NumPy slicing and masks on a packed-RGBX canvas (no per-pixel Python), so one core
renders and encodes about 400 224x224 images a second. Optional objects are placed so that nearer ones hide
little of them, and a layout that hid a present class is redrawn: "the image contains p" and "the label map
contains p" are the same event, which the planted-frequency statistics rely on.

Modules: `config` (classes, rates, config validation), `canvas` and `patterns` (drawing), `backdrop`,
`roadside` and `street` (what is drawn), `scene` (one image, also with classes removed: counterfactual
scenes), `dataset` (files on disk, the cache, and `SyntheticCities`, which renders any image of a dataset
again, with or without some of its objects).
"""

from citylens.data.synthetic.canvas import Color, Rect
from citylens.data.synthetic.config import (
    ALWAYS_DRAWN,
    BASE_RATES,
    DEFAULT_CITIES,
    GENERATOR_VERSION,
    JPEG_QUALITY,
    OPTIONAL,
    normalize_cities,
    renderable_classes,
)
from citylens.data.synthetic.dataset import (
    SyntheticCities,
    city_probabilities,
    ensure_synthetic,
    generate,
    image_rng,
    image_seed,
    sample_contents,
    settings_hash,
)
from citylens.data.synthetic.scene import render_scene, render_variants

__all__ = [
    "ALWAYS_DRAWN",
    "BASE_RATES",
    "DEFAULT_CITIES",
    "GENERATOR_VERSION",
    "JPEG_QUALITY",
    "OPTIONAL",
    "Color",
    "Rect",
    "SyntheticCities",
    "city_probabilities",
    "ensure_synthetic",
    "generate",
    "image_rng",
    "image_seed",
    "normalize_cities",
    "render_scene",
    "render_variants",
    "renderable_classes",
    "sample_contents",
    "settings_hash",
]
