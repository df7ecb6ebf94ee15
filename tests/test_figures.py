"""Figures: the 'one image, every explainer' grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.container import ErrorbarContainer

from citylens.explain import build_explainer
from citylens.figures import ratio_bars


def test_explainer_grid_writes_a_png_of_the_layout_size_and_refuses_mismatches(networks, tmp_path) -> None:
    from PIL import Image

    from citylens.figures import GRID_PANEL, GRID_TITLE, explainer_grid, save

    network = networks["simple"]
    torch.manual_seed(3)
    images = torch.rand(2, 3, 64, 64)
    columns = {
        f"{name} {preset}": build_explainer(name, network, preset)(images).numpy()
        for name, preset in (("gradcam", "last_block"), ("layercam", "last_conv"), ("hirescam", "last_conv"))
    }
    pixels = (images.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    dpi = 50
    path = save(
        explainer_grid(pixels, columns, ["a", "b"], 0.5, "t"), tmp_path / "grid.png", dpi, tight=False
    )
    with Image.open(path) as png:
        assert png.size == (round(4 * GRID_PANEL * dpi), round((2 * GRID_PANEL + GRID_TITLE) * dpi))
    two = save(
        explainer_grid(pixels, dict(list(columns.items())[:1]), ["a", "b"], 0.5),
        tmp_path / "2.png",
        dpi,
        tight=False,
    )
    with Image.open(two) as png:
        assert png.size[0] == round(2 * GRID_PANEL * dpi)

    bad = {**columns, "short": columns["gradcam last_block"][:1]}
    with pytest.raises(ValueError, match=r"masks_by_column\['short'\]: shape \(1, 64, 64\) does not match"):
        explainer_grid(pixels, bad, ["a", "b"], 0.5)
    with pytest.raises(ValueError, match="masks_by_column\\['small'\\]"):
        explainer_grid(pixels, {"small": np.zeros((2, 32, 32), np.float32)}, ["a", "b"], 0.5)
    with pytest.raises(ValueError, match="titles: 1 row titles for 2 images"):
        explainer_grid(pixels, columns, ["a"], 0.5)
    with pytest.raises(ValueError, match="empty"):
        explainer_grid(pixels, {}, ["a", "b"], 0.5)
    with pytest.raises(ValueError, match="uint8"):
        explainer_grid(pixels.astype(np.float32), columns, ["a", "b"], 0.5)
    with pytest.raises(ValueError, match="analysis.threshold"):
        explainer_grid(pixels, columns, ["a", "b"], 1.5)


def test_ratio_bars_draws_any_statistic_but_r_signed_whatever_its_range() -> None:
    # Attributions that all happen to lie in [0, 1]: still a signed panel (zero line, free x range) with the
    # 95% intervals as whiskers, as for any other run; R keeps its [0, 1] axis and no whiskers.
    table = pd.DataFrame(
        {
            "city": ["tokyo"] * 2,
            "object": ["signboard", "fence"],
            "attribution": [0.4, 0.1],
            "ratio": [0.4, 0.1],
            "ci_low": [0.3, -0.05],
            "ci_high": [0.5, 0.2],
            "kept": [True, True],
        }
    )
    attribution = ratio_bars(table, value="attribution", xlabel="A").axes[0]
    assert any(line.get_xdata()[0] == 0 for line in attribution.lines)  # the zero line
    assert any(isinstance(c, ErrorbarContainer) for c in attribution.containers)
    assert attribution.get_xlim()[0] < 0  # the whisker below zero is shown, not clipped at 0
    ratio = ratio_bars(table).axes[0]
    assert ratio.get_xlim() == (0, 1)
    assert not any(isinstance(c, ErrorbarContainer) for c in ratio.containers)
