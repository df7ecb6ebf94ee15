"""The causal step on synthetic cities: counterfactual and deletion probes, effects of a trained network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from citylens.app.config import step_options
from citylens.core.ade20k import class_index
from citylens.core.view import to_input
from citylens.data.synthetic import SyntheticCities
from citylens.data.synthetic.counterfactuals import CACHE_FOLDER
from citylens.pipeline import Variant
from citylens.pipeline.causal_step import as_view, causal_effects, causal_probes
from citylens.pipeline.context import Context
from citylens.segment import GroundTruthSegmenter


def test_counterfactual_of_nothing_is_the_view_the_classifier_saw(cache_dir: Path, one_cue_data) -> None:
    dm = one_cue_data(n=10)
    scenes = SyntheticCities(dm.root)
    labels = np.stack([GroundTruthSegmenter(dm.input_size).load(r) for r in dm.splits["test"]])
    n = len(labels)
    test = dm.split_view("test")
    probes = list(causal_probes(test, range(n), ["counterfactual", "deletion"], labels))
    only_deletion = list(causal_probes(test, range(n), ["deletion"], labels))
    in_workers = list(causal_probes(test, range(n), ["counterfactual", "deletion"], labels, workers=2))
    assert all(
        np.array_equal(a.views, b.views) and a.objects == b.objects for a, b in zip(probes, in_workers)
    )
    for probe, deletion in zip(probes, only_deletion):
        record = dm.splits["test"][probe.image]
        assert np.array_equal(as_view(scenes.render(record.image_id)[0], dm.input_size), probe.views[0])
        present = scenes.contents(record.image_id)[0]
        cf = [o for o, m in zip(probe.objects, probe.methods) if m == "counterfactual"]
        assert cf == present and len(probe.views) == 1 + len(probe.objects)
        # With both methods, deletion measures the counterfactual's objects; alone, every labelled class.
        assert [o for o, m in zip(probe.objects, probe.methods) if m == "deletion"] == sorted(
            present, key=lambda name: class_index(name)
        )
        assert np.array_equal(deletion.views[0], probe.views[0])
        assert {"sky", "building", "road"} <= set(deletion.objects) and set(deletion.methods) == {"deletion"}


def test_trained_network_relies_on_the_only_cue(
    cache_dir: Path, tmp_path: Path, train_tiny, one_cue_data
) -> None:
    dm = one_cue_data()
    net = train_tiny(dm)
    with torch.no_grad():
        accuracy = np.mean(
            [(net(to_input(x)).argmax(1) == y).float().mean().item() for x, y in dm.test_dataloader()]
        )
    assert accuracy >= 0.9
    test = dm.split_view("test")
    table, rows = causal_effects(net, causal_probes(test, range(len(test.records)), ["counterfactual"]))
    assert len(rows) == table["n_images"].sum()
    a = table[table.city == "a"].reset_index(drop=True)
    assert a["object"][0] == "signboard" and a["effect"][0] > 0.2 and a["ci_low"][0] > 0
    assert "signboard" not in set(table[table.city == "b"]["object"])  # never in city b's images
    common = table[table["object"].isin(["tree", "person", "car", "pole"])]
    assert (common["effect"].abs() < 0.06).all(), common
    # The step writes the same counterfactual table plus deletion and their agreement.
    context = Context(
        net, "simple", test, tmp_path, Variant(), GroundTruthSegmenter(dm.input_size), cache_dir
    )
    step_options("causal").run(context)
    written = pd.read_csv(tmp_path / "causal.csv")
    assert set(written["method"]) == {"counterfactual", "deletion"}
    cf = written[written.method == "counterfactual"].reset_index(drop=True)
    assert np.allclose(cf["effect"], table["effect"]) and cf["object"].tolist() == table["object"].tolist()
    agreement = pd.read_csv(tmp_path / "causal_agreement.csv")
    assert agreement["n_pairs"][0] == len(table) and -1 <= agreement["spearman"][0] <= 1


def test_render_cache_renders_once_and_keeps_causal_csv_byte_identical(
    cache_dir: Path, tmp_path: Path, renders: list[str], train_tiny, one_cue_data
) -> None:
    dm = one_cue_data(n=40)
    net = train_tiny(dm, epochs=0)  # untrained: the test compares files, not effects
    segmenter = GroundTruthSegmenter(dm.input_size)
    cache = tmp_path / "cache"

    def run(name: str, render_cache: bool) -> bytes:
        context = Context(net, "simple", dm.split_view("test"), tmp_path / name, Variant(), segmenter, cache)
        step_options("causal", n_boot=200, render_cache=render_cache).run(context)
        return (tmp_path / name / "causal.csv").read_bytes()

    uncached = run("uncached", False)
    with_objects = [r.image_id for r in dm.splits["test"] if SyntheticCities(dm.root).contents(r.image_id)[0]]
    assert renders == with_objects  # each test image holding an object, rendered once
    renders.clear()
    cold = run("cold", True)
    assert renders == with_objects and list((cache / CACHE_FOLDER).iterdir())
    renders.clear()
    warm = run("warm", True)
    assert renders == []  # the second run of the same dataset renders no scene
    assert cold == warm == uncached
    assert set(pd.read_csv(tmp_path / "warm" / "causal.csv")["method"]) == {"counterfactual", "deletion"}
