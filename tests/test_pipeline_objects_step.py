"""The objects step on hand-made masks and label maps: which images enter, the object ratios R_p^c (checked
by hand and against citylens.analysis.ratios), the step's files from stored label PNGs through the label
cache, the object attribution of an attribution explainer, and label maps of other images refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from torch import nn

from citylens.analysis import ratios
from citylens.app.config import step_options
from citylens.core.ade20k import class_index
from citylens.core.records import ImageRecord
from citylens.explain.store import StoreError, open_store, write_store
from citylens.pipeline import Variant
from citylens.pipeline.context import Context
from citylens.pipeline.objects_step import object_ratios, selected
from citylens.segment import GroundTruthSegmenter

SIZE = 8
TOP, BOTTOM = class_index("signboard"), class_index("skyscraper")
# Image i is of city i % 2 (pittsburgh, tokyo, pittsburgh, tokyo); image 3 is classified as pittsburgh.
TARGETS = np.array([0, 1, 0, 1])
PROBS = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]], np.float32)


def _masks() -> np.ndarray:
    """Binary masks: image 0 its top two rows, 1 the top half, 2 the bottom half, 3 all but one pixel."""
    masks = np.zeros((4, SIZE, SIZE), np.float32)
    masks[0, :2] = 1
    masks[1, :4] = 1
    masks[2, 4:] = 1
    masks[3] = 1
    masks[3, -1, -1] = 0
    return masks


def _labels() -> np.ndarray:
    """Every image: a signboard in the top half, a skyscraper in the bottom half."""
    labels = np.full((4, SIZE, SIZE), BOTTOM, np.uint8)
    labels[:, :4] = TOP
    return labels


def _store(folder: Path, data, maps: np.ndarray | None = None, **provenance):
    meta = {"arch": "simple", "seed": 0, "input_size": SIZE, "dataset_fingerprint": "hand-made"}
    write_store(
        folder / "masks",
        _masks() if maps is None else maps,
        PROBS,
        TARGETS,
        data.ids,
        [r.city for r in data.records],
        {**meta, **provenance},
        places=[r.place for r in data.records],
    )
    return open_store(folder)


def _labelled(data, folder: Path):
    """The split with each record's label PNG (`_labels()`)."""
    folder.mkdir()
    records = []
    for i, (r, label) in enumerate(zip(data.records, _labels())):
        path = folder / f"{i}.png"
        Image.fromarray(label).save(path)
        records.append(ImageRecord(r.image_id, r.path, r.city, r.place, path))
    return dataclasses.replace(data, records=records)


def _context(data, tmp_path: Path, variant: Variant | None = None) -> Context:
    return Context(
        nn.Identity(),
        "simple",
        data,
        tmp_path / "run",
        variant or Variant(),
        GroundTruthSegmenter(SIZE),
        tmp_path,
    )


def _ratio(table: pd.DataFrame, city: str, name: str, threshold: float = 0.5) -> float:
    row = table[(table.city == city) & (table.object == name) & np.isclose(table.threshold, threshold)]
    assert len(row) == 1, row
    return float(row["ratio"].iloc[0])


# ---------------------------------------------------------------- selected, object_ratios


def test_selected_is_every_image_or_the_correct_ones(split_data, tmp_path: Path):
    store = _store(tmp_path, split_data(n=4, size=SIZE))
    assert selected(store, Variant()).tolist() == [True] * 4
    assert selected(store, Variant(images="correct")).tolist() == [True, True, True, False]


def test_ratios_by_hand_over_all_and_over_the_correct_images(split_data, tmp_path: Path):
    store = _store(tmp_path, split_data(n=4, size=SIZE))
    table = object_ratios(store, _labels(), Variant(), [0.5], 100, n_boot=0)
    assert _ratio(table, "pittsburgh", "signboard") == pytest.approx(16 / 64)
    assert _ratio(table, "pittsburgh", "skyscraper") == pytest.approx(32 / 64)
    assert _ratio(table, "tokyo", "signboard") == pytest.approx(64 / 64)
    assert _ratio(table, "tokyo", "skyscraper") == pytest.approx(31 / 64)
    assert table["mean_pixels"].tolist() == [32.0] * 4 and table["kept"].all()
    correct = object_ratios(store, _labels(), Variant(images="correct"), [0.5], 100, n_boot=0)
    assert _ratio(correct, "tokyo", "signboard") == pytest.approx(1.0)
    assert _ratio(correct, "tokyo", "skyscraper") == 0.0  # image 3, wrongly classified, left out
    assert _ratio(correct, "pittsburgh", "skyscraper") == pytest.approx(0.5)
    tokyo = correct[correct.city == "tokyo"]
    assert tokyo["total_pixels"].tolist() == [32, 32] and tokyo["mean_pixels"].tolist() == [32.0, 32.0]


def test_ratios_equal_the_analysis_on_the_selected_images(split_data, tmp_path: Path):
    data = split_data(n=4, size=SIZE)
    store = _store(tmp_path, data)
    keep = np.array([True, True, True, False])
    variant = Variant(images="correct")
    got = object_ratios(store, _labels(), variant, [0.3, 0.5], 100, n_boot=50, seed=1)
    expected = ratios.object_ratios(
        store.masks().numpy()[keep],
        _labels()[keep],
        [r.city for r in np.array(data.records)[keep]],
        [0.3, 0.5],
        100 * (SIZE / 224) ** 2,
        places=[r.place for r in np.array(data.records)[keep]],
        n_boot=50,
        seed=1,
    )
    pd.testing.assert_frame_equal(got, expected)


def test_min_mean_pixels_is_given_at_224_px(split_data, tmp_path: Path):
    store = _store(tmp_path, split_data(n=4, size=SIZE))
    scale = (224 / SIZE) ** 2  # every object averages 32 pixels per image at 8 px
    assert object_ratios(store, _labels(), Variant(), [0.5], 31 * scale, n_boot=0)["kept"].all()
    assert not object_ratios(store, _labels(), Variant(), [0.5], 33 * scale, n_boot=0)["kept"].any()


# ---------------------------------------------------------------- the step


def test_the_step_writes_ratios_summary_recovery_and_figure(split_data, tmp_path: Path):
    data = _labelled(split_data(n=4, size=SIZE), tmp_path / "labels")
    context = _context(data, tmp_path)
    _store(context.out, data)
    step = step_options("objects", n_boot=20, extra_thresholds=[0.3])
    result = step.run(context)
    out = context.out
    files = [out / f"{name}.csv" for name in ("object_ratios", "ratio_summary", "recovery")]
    assert result.files == [*files, out / "figures" / "fig5_ratios.png"]
    assert all(path.is_file() for path in result.files)
    assert not (out / "object_attribution.csv").exists()  # a CAM variant
    table = pd.read_csv(out / "object_ratios.csv")
    assert sorted(set(table["threshold"])) == [0.3, 0.5]
    for t in (0.3, 0.5):  # binary masks: the same at every threshold
        assert _ratio(table, "pittsburgh", "signboard", t) == pytest.approx(0.25)
        assert _ratio(table, "pittsburgh", "skyscraper", t) == pytest.approx(0.5)
        assert _ratio(table, "tokyo", "signboard", t) == pytest.approx(1.0)
        assert _ratio(table, "tokyo", "skyscraper", t) == pytest.approx(31 / 64)
    assert (table["ci_low"] <= table["ratio"] + 1e-9).all() and (
        table["ratio"] <= table["ci_high"] + 1e-9
    ).all()
    recovery = pd.read_csv(out / "recovery.csv")
    at = recovery[np.isclose(recovery.threshold, 0.5)].set_index("city")
    # tokyo's planted signboard ranks first, its fence is absent; pittsburgh's skyscraper first, no earth.
    assert at.loc["tokyo", "precision_at_k"] == pytest.approx(0.5)
    assert at.loc["pittsburgh", "precision_at_k"] == pytest.approx(0.5)
    assert at.loc["tokyo", "planted_ranks"] == "(1, None)"
    assert at.loc["pittsburgh", "planted_ranks"] == "(1, None)"


def test_the_step_writes_object_attribution_for_an_attribution_explainer(split_data, tmp_path: Path):
    data = _labelled(split_data(n=4, size=SIZE), tmp_path / "labels")
    variant = Variant("ixg", layer="input")
    context = _context(data, tmp_path, variant)
    maps = np.full((4, SIZE, SIZE), -1.0, np.float32)
    for i in range(4):
        maps[i, :4] = i + 1  # signboard: i + 1 per pixel, skyscraper: -1
    _store(context.out, data, maps)
    result = step_options("objects", n_boot=0).run(context)
    assert context.out / "object_attribution.csv" in result.files
    table = pd.read_csv(context.out / "object_attribution.csv").set_index(["city", "object"])
    # ixg sums the map over the object's pixels, averaged over the city's images showing it.
    assert table.loc[("pittsburgh", "signboard"), "attribution"] == pytest.approx((32 * 1 + 32 * 3) / 2)
    assert table.loc[("tokyo", "signboard"), "attribution"] == pytest.approx((32 * 2 + 32 * 4) / 2)
    assert table.loc[("tokyo", "skyscraper"), "attribution"] == pytest.approx(-32)
    assert table["n_images"].tolist() == [2, 2, 2, 2]


def _bars(fig) -> dict[tuple[str, str], float]:
    """(city, object) -> bar length of a Figure 5: one horizontal bar per object, one panel per city."""
    bars = {}
    for ax in fig.axes:
        city = ax.get_title().split()[0]
        names = [t.get_text() for t in ax.get_yticklabels()]
        for name, patch in zip(names, [p for p in ax.patches if p.get_height() > 0]):
            bars[(city, name)] = patch.get_width()
    return bars


def test_an_attribution_variant_draws_figure_5_for_both_statistics(
    split_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from citylens import figures

    data = _labelled(split_data(n=4, size=SIZE), tmp_path / "labels")
    context = _context(data, tmp_path, Variant("ixg", layer="input"))
    maps = np.full((4, SIZE, SIZE), -1.0, np.float32)
    for i in range(4):
        maps[i, :4] = i + 1
    _store(context.out, data, maps)
    drawn = {}
    save = figures.save
    monkeypatch.setattr(
        figures, "save", lambda fig, path: drawn.setdefault(path.name, _bars(fig)) and save(fig, path)
    )
    result = step_options("objects", n_boot=50).run(context)
    out = context.out / "figures"
    assert result.figures == {
        "fig5_ratios": out / "fig5_ratios.png",
        "fig5_attribution": out / "fig5_attribution.png",
    }
    assert all(path.is_file() and path.stat().st_size > 5000 for path in result.figures.values())
    ratios_table = pd.read_csv(context.out / "object_ratios.csv")
    at = ratios_table[np.isclose(ratios_table["threshold"], 0.5) & ratios_table["kept"]]
    assert drawn["fig5_ratios.png"] == pytest.approx({(r.city, r.object): r.ratio for r in at.itertuples()})
    attribution = pd.read_csv(context.out / "object_attribution.csv")
    expected = {(r.city, r.object): r.attribution for r in attribution[attribution["kept"]].itertuples()}
    assert drawn["fig5_attribution.png"] == pytest.approx(expected)
    assert expected[("tokyo", "skyscraper")] == pytest.approx(-32)  # a signed bar, drawn to the left


def test_label_maps_of_other_images_are_refused(split_data, tmp_path: Path):
    data = _labelled(split_data(n=4, size=SIZE), tmp_path / "labels")
    context = _context(data, tmp_path)
    _store(context.out, dataclasses.replace(data, records=list(data.records)[::-1]))
    with pytest.raises(StoreError, match="label maps do not cover the store's test images in order"):
        step_options("objects", n_boot=0).run(context)
    _store(context.out, data, dataset_fingerprint="another")
    with pytest.raises(StoreError, match="label maps are of another dataset"):
        step_options("objects", n_boot=0).run(context)
    assert not (context.out / "object_ratios.csv").exists()


def test_without_stored_label_maps_the_step_writes_nothing(split_data, tmp_path: Path):
    data = split_data(n=4, size=SIZE)  # records without label paths, ground-truth segmenter
    context = _context(data, tmp_path)
    _store(context.out, data)
    result = step_options("objects", n_boot=0).run(context)
    assert result.files == [] and result.tables == {}
    assert not (context.out / "object_ratios.csv").exists()


def test_extra_thresholds_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError, match="1.5"):
        step_options("objects", extra_thresholds=[0.3, 1.5])
