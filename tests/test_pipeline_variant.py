"""Analysis variants: names derived from the settings that change the artefacts, checks naming the key,
provenance round trips, and the variants a run holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylens.pipeline.variant import Variant, list_variants


def test_name_holds_every_setting_and_only_the_changed_options():
    assert Variant().name == "gradcam-last_block-label-all-t0.5"
    assert Variant("gradcam++", "features.3", "prediction", "correct", 0.25).name == (
        "gradcampp-features.3-prediction-correct-t0.25"
    )
    assert Variant("ig", "input").name == "ig-input-label-all-t0.5"  # default options leave no trace
    changed = Variant("ig", "input", options={"baseline": "black", "n_steps": 8})
    assert changed.name == "ig_baseline_black_n_steps_8-input-label-all-t0.5"
    assert changed.changed_options() == {"baseline": "black", "n_steps": 8}
    assert Variant("ig", "input", options={"n_steps": 16}).name == Variant("ig", "input").name


def test_explainer_class_paths_become_registry_names():
    assert Variant("citylens.explain.LayerCAM").explainer == "layercam"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"target": "both"}, "analysis.target: must be one of"),
        ({"images": "some"}, "analysis.images: must be one of"),
        ({"threshold": 1.5}, "threshold"),
        ({"layer": ""}, "explainer.layer: must name a layer preset"),
        ({"explainer": "ig"}, "the attribution explainers .* take 'input', a CAM a layer"),
        ({"layer": "input"}, "take 'input', a CAM a layer"),
        ({"explainer": "deconvnet"}, "unknown method 'deconvnet'"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        Variant(**kwargs)


def test_provenance_round_trip_and_unknown_keys_ignored():
    variant = Variant("occlusion", "input", "prediction", "correct", 0.3)
    recorded = variant.to_dict()
    assert recorded["variant"] == variant.name and "options" in recorded
    assert Variant.from_dict({**recorded, "steps": {"explain": {}}}) == variant
    assert "options" not in Variant().to_dict()  # a CAM's provenance is what it always was
    assert Variant.from_dict({"threshold": 0.3}) == Variant(threshold=0.3)


def test_variants_of_a_run_are_the_folders_with_a_mask_store(tmp_path: Path):
    for variant in (Variant(), Variant(threshold=0.3)):
        (variant.dir(tmp_path) / "masks").mkdir(parents=True)
        (variant.dir(tmp_path) / "masks" / "meta.json").write_text("{}")
    (tmp_path / "analysis" / "half-done").mkdir()
    assert variant.dir(tmp_path) == tmp_path / "analysis" / "gradcam-last_block-label-all-t0.3"
    assert list_variants(tmp_path) == sorted([Variant().name, Variant(threshold=0.3).name])
    assert list_variants(tmp_path / "nowhere") == []
