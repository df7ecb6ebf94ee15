"""Figures across the runs of a sweep (citylens/report/sweep_figures.py): what each draws, read back from
the matplotlib artists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from citylens.analysis.sanity import SANITY_FLAG_RHO
from citylens.figures import CITY_COLOURS, save
from citylens.report import sweep_figures as sf


def test_run_colours_one_hue_per_architecture_lighter_for_later_seeds():
    colours = sf.run_colours(["vgg11", "resnet18", "vgg11", "vgg11"])
    red, blue = np.array(to_rgb(sf.ARCH_COLOURS[0])), np.array(to_rgb(sf.ARCH_COLOURS[1]))
    np.testing.assert_allclose(colours[0], red)
    np.testing.assert_allclose(colours[1], blue)  # one seed: the plain hue
    np.testing.assert_allclose(colours[2], red * (1 - 0.275) + 0.275)
    np.testing.assert_allclose(colours[3], red * (1 - 0.55) + 0.55)
    # Architectures past the palette's end wrap around to its start.
    many = sf.run_colours([f"a{i}" for i in range(len(sf.ARCH_COLOURS) + 1)])
    assert many[-1] == many[0]


def _pairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label_a": ["vgg-s0", "vgg-s0", "vgg-s1"],
            "label_b": ["vgg-s1", "res-s0", "res-s0"],
            "ar": [0.3, 0.7, 0.5],
        }
    )


def test_ar_heatmap_is_the_symmetric_grid_with_a_scale_of_the_observed_values():
    fig = sf.ar_heatmap(["vgg-s0", "vgg-s1", "res-s0"], ["vgg", "vgg", "res"], _pairs())
    ax = fig.axes[0]
    image = ax.images[0]
    grid = image.get_array()
    expected = np.array([[np.nan, 0.3, 0.7], [0.3, np.nan, 0.5], [0.7, 0.5, np.nan]])
    np.testing.assert_array_equal(grid.mask, np.isnan(expected))
    np.testing.assert_allclose(grid.filled(np.nan), expected)
    assert image.get_clim() == (0.3, 0.7)
    texts = {(t.get_position(), t.get_text()): t.get_color() for t in ax.texts}
    assert len(texts) == 6
    assert texts[((1, 0), "0.300")] == "white" and texts[((0, 1), "0.300")] == "white"
    assert texts[((2, 0), "0.700")] == "black" and texts[((1, 2), "0.500")] == "black"  # 0.5 is the middle
    # One pair of lines between the architectures (after the second run), none between seeds.
    assert len(ax.lines) == 2
    assert ax.lines[0].get_ydata()[0] == 1.5 and ax.lines[1].get_xdata()[0] == 1.5
    assert [t.get_text() for t in ax.get_xticklabels()] == ["vgg-s0", "vgg-s1", "res-s0"]
    assert ax.get_title() == "Average residual between runs (Table 2)"
    assert fig.axes[1].get_ylabel() == "average residual AR"


def test_ar_heatmap_widens_a_narrow_scale_and_takes_a_title():
    pairs = pd.DataFrame({"label_a": ["a"], "label_b": ["b"], "ar": [0.5]})
    fig = sf.ar_heatmap(["a", "b"], ["x", "y"], pairs, title="mine")
    assert fig.axes[0].images[0].get_clim() == pytest.approx((0.49, 0.51))
    assert fig.axes[0].get_title() == "mine"


def test_tsne_grid_a_row_per_architecture_and_one_legend():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(6, 2))
    cities = np.array([0, 0, 0, 1, 1, 1])
    names = ["pittsburgh", "tokyo"]
    panels = [
        ("vgg", "vgg-s0", coords, cities, names),
        ("res", "res-s0", coords, cities, names),
        ("vgg", "vgg-s1", coords + 1, cities, names),
    ]
    fig = sf.tsne_grid(panels)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [[ax.get_title() for ax in row] for row in axes] == [["vgg-s0", "vgg-s1"], ["res-s0", ""]]
    assert not axes[1, 1].axison and axes[0, 0].axison
    assert axes[0, 0].get_legend() is not None
    assert [t.get_text() for t in axes[0, 0].get_legend().get_texts()] == ["pittsburgh (3)", "tokyo (3)"]
    assert all(ax.get_legend() is None for ax in (axes[0, 1], axes[1, 0]))
    second = axes[0, 1].collections
    np.testing.assert_allclose(second[0].get_offsets(), coords[:3] + 1)
    np.testing.assert_allclose(second[1].get_facecolor()[0][:3], CITY_COLOURS[1])
    assert fig.get_suptitle() == "t-SNE of the Grad-CAM masks, every run (Figure 3)"


def _ratio_table(values: dict[str, float], city: str = "tokyo", kept: bool = True) -> pd.DataFrame:
    return pd.DataFrame(
        {"city": city, "object": list(values), "ratio": list(values.values()), "kept": kept, "threshold": 0.5}
    )


def _bars(ax) -> list[tuple[float, float]]:
    """(x centre, height) of each bar, in drawing order."""
    return [(round(p.get_x() + p.get_width() / 2, 6), round(p.get_height(), 6)) for p in ax.patches]


def test_ratio_bars_runs_groups_bars_by_object_in_order_of_mean_r():
    tables = [
        pd.concat([_ratio_table({"sign": 0.9, "road": 0.2}), _ratio_table({"sky": 0.99}, kept=False)]),
        _ratio_table({"sign": 0.5, "road": 0.4, "car": 0.6}),
    ]
    fig = sf.ratio_bars_runs(tables, ["r0", "r1"], ["vgg", "res"], planted={"tokyo": ["road"]})
    ax = fig.axes[0]
    # Mean R over runs that keep the object: sign 0.7, car 0.6, road 0.3; sky is not kept.
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sign", "car", "road *"]
    # Run 0's bars first (missing objects drawn at 0), each run shifted by its bar width (0.4).
    assert _bars(ax) == [(-0.2, 0.9), (0.8, 0.0), (1.8, 0.2), (0.2, 0.5), (1.2, 0.6), (2.2, 0.4)]
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_title() == "tokyo   (* planted cue)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["r0", "r1"]
    assert fig.get_suptitle() == "Object ratios of every run (Figure 5)"


def test_ratio_bars_runs_keeps_planted_objects_past_the_cut_and_shows_signed_values():
    values = {f"o{i}": 1.0 - i / 10 for i in range(6)}
    tables = [pd.concat([_ratio_table(values), _ratio_table({"x": -0.5, "y": 0.1}, city="pittsburgh")])]
    fig = sf.ratio_bars_runs(
        tables, ["r0"], ["vgg"], planted={"tokyo": ["o5"]}, max_objects=3, value_label="v"
    )
    pittsburgh, tokyo = fig.axes  # one panel per city, sorted
    assert [t.get_text() for t in tokyo.get_xticklabels()] == ["o0", "o1", "o5 *"]
    assert [t.get_text() for t in pittsburgh.get_xticklabels()] == ["y", "x"]
    assert pittsburgh.get_title() == "pittsburgh" and tokyo.get_ylabel() == "v"
    # A negative value: the axis follows the values, with a line at zero, in every panel.
    assert pittsburgh.get_ylim()[0] < -0.5 and len(pittsburgh.lines) == 1 and len(tokyo.lines) == 1
    assert sf._objects_for(tables[0], "tokyo", 0, ["o5"]) == ["o5"]


def test_examples_runs_with_and_without_images():
    masks = np.random.default_rng(0).random((3, 2, 8, 8))  # 3 runs, 2 images
    notes = np.array([[f"r{r}i{i}" for i in range(2)] for r in range(3)])
    images = np.zeros((2, 8, 8, 3), np.uint8)
    fig = sf.examples_runs(images, masks, ["a", "b", "c"], ["img 0", "img 1"], notes)
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["image", "a", "b", "c"]
    assert [ax.get_xlabel() for ax in axes[1, 1:]] == ["r0i1", "r1i1", "r2i1"]
    assert axes[1, 0].get_ylabel() == "img 1"
    assert axes[0, 1].images[0].get_array().shape == (8, 8, 3)  # the mask blended over the image

    alone = sf.examples_runs(None, masks, ["a", "b", "c"], ["img 0", "img 1"], notes, title="t")
    axes = np.array(alone.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["a", "b", "c"]
    assert axes[1, 0].get_ylabel() == "img 1" and axes[1, 1].get_ylabel() == ""
    np.testing.assert_allclose(axes[1, 2].images[0].get_array(), masks[2, 1])
    assert axes[0, 0].images[0].get_cmap().name == "jet"
    assert alone.get_suptitle() == "t"


def test_ratio_vs_effect_one_panel_per_architecture_with_the_planted_objects_named():
    points = pd.DataFrame(
        {
            "arch": ["vgg", "vgg", "vgg", "res"],
            "label": ["vgg-s0", "vgg-s1", "vgg-s0", "res-s0"],
            "city": ["tokyo", "tokyo", "pittsburgh", "tokyo"],
            "object": ["sign", "sign", "car", "sign"],
            "ratio": [0.8, 0.7, 0.2, 0.5],
            "effect": [0.3, 0.25, -0.1, 0.2],
            "planted": [True, True, False, True],
        }
    )
    fig = sf.ratio_vs_effect(points, ["vgg", "simple", "res"], "counterfactual")
    vgg, res = fig.axes  # "simple" has no points: no panel
    assert vgg.get_title() == "vgg (2 runs)" and res.get_title() == "res (1 runs)"
    assert vgg.get_xlabel() == "causal effect (counterfactual)" and vgg.get_ylim() == (0.0, 1.0)
    # Tokyo's planted sign drawn twice (two runs) but named once; Pittsburgh's car is not named.
    assert [t.get_text() for t in vgg.texts] == ["sign"]
    offsets = {c.get_label(): c.get_offsets().tolist() for c in vgg.collections if len(c.get_offsets())}
    assert offsets == {"pittsburgh": [[-0.1, 0.2]], "tokyo (planted)": [[0.3, 0.8], [0.25, 0.7]]}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["pittsburgh", "tokyo (planted)"]


def test_sanity_cascade_a_line_per_explainer_with_the_flag_line():
    summary = pd.DataFrame(
        {
            "arch": ["vgg"] * 4 + ["res"] * 2,
            "explainer": ["gradcam", "gradcam", "ig", "ig", "gradcam", "gradcam"],
            "step": [1, 0, 0, 1, 0, 1],
            "step_name": ["full", "none", "none", "full", "none", "full"],
            "spearman": [0.1, 1.0, 0.9, 0.6, 1.0, 0.2],
            "spearman_min": [0.0, 1.0, 0.8, 0.5, 1.0, 0.1],
            "spearman_max": [0.2, 1.0, 1.0, 0.7, 1.0, 0.3],
        }
    )
    fig = sf.sanity_cascade(summary, ["res", "vgg", "none"])
    res, vgg = fig.axes
    assert res.get_title() == "res" and vgg.get_title() == "vgg"
    lines = {line.get_label(): line for line in vgg.lines if not line.get_label().startswith("_")}
    assert set(lines) == {"gradcam", "ig"}
    np.testing.assert_allclose(lines["gradcam"].get_ydata(), [1.0, 0.1])  # sorted by step
    np.testing.assert_allclose(lines["ig"].get_ydata(), [0.9, 0.6])
    flags = [line for line in vgg.lines if line.get_label().startswith("_")]
    assert [line.get_ydata()[0] for line in flags] == [SANITY_FLAG_RHO]
    assert vgg.get_ylim() == (-1.0, 1.05)
    assert [t.get_text() for t in vgg.get_xticklabels()] == ["none", "full"]
    assert res.get_ylabel() == "mean Spearman rho, trained vs random"


def test_every_figure_saves_as_a_png(tmp_path):
    fig = sf.ar_heatmap(["vgg-s0", "vgg-s1", "res-s0"], ["vgg", "vgg", "res"], _pairs())
    path = save(fig, tmp_path / "heatmap.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
