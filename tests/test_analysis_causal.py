"""Causal object importance: deletion fills, batched measurement, tables, agreement, a trained network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from citylens.analysis.causal import Probe, causal_agreement, causal_table, delete_objects, measure
from citylens.analysis.stats import bootstrap_ci
from citylens.callbacks.causal import CausalCallback
from citylens.core.ade20k import class_index
from citylens.data.datamodule import SyntheticCityData
from citylens.data.synthetic import SyntheticCities
from citylens.pipeline.causal_step import as_view, causal_effects, causal_probes
from citylens.segment import GroundTruthSegmenter

ONE_CUE = {"a": {"planted": {"signboard": 1.0}}, "b": {"planted": {"signboard": 0.0}}}


def _data(cache_dir: Path, n: int = 100, size: int = 32) -> SyntheticCityData:
    dm = SyntheticCityData(
        ONE_CUE, images_per_city=n, image_size=size, input_size=size, cache_dir=str(cache_dir), hflip=False
    )
    dm.setup()
    return dm


def test_place_bootstrap_equals_image_bootstrap_when_every_image_is_its_place() -> None:
    x = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(x, 300, seed=2) == bootstrap_ci(
        x, 300, seed=2, groups=np.arange(50)[::-1].astype(str)
    )


def test_place_bootstrap_resamples_places() -> None:
    # 10 places, 20 identical views each: the place bootstrap sees 10 values, not 200 independent ones.
    values = np.repeat(np.random.default_rng(1).normal(size=10), 20)
    places = np.repeat(np.arange(10), 20)
    lo_img, hi_img = bootstrap_ci(values, 2000)
    lo_pl, hi_pl = bootstrap_ci(values, 2000, groups=places)
    lo_ten, hi_ten = bootstrap_ci(values[::20], 2000)
    assert hi_pl - lo_pl > 3 * (hi_img - lo_img)
    assert hi_pl - lo_pl == pytest.approx(hi_ten - lo_ten, rel=0.15)
    with pytest.raises(ValueError, match="one place per value"):
        bootstrap_ci(values, 10, groups=places[:5])


def test_delete_objects_fills_only_the_mask() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 10:, :] = True
    for fill in ("mean", "blur"):
        out = delete_objects(image, masks, fill)
        assert out.shape == (2, 16, 16, 3)
        for k in range(2):
            assert np.array_equal(out[k][~masks[k]], image[~masks[k]])
            assert not np.array_equal(out[k][masks[k]], image[masks[k]])
    mean = image.reshape(-1, 3).mean(0).round()
    assert np.array_equal(delete_objects(image, masks, "mean")[0][masks[0]], np.tile(mean, (24, 1)))
    with pytest.raises(ValueError, match="fill: 'zero'"):
        delete_objects(image, masks, "zero")


def _redness(views: np.ndarray) -> np.ndarray:
    """A fake two-city network: P(city 0) = mean red / 255."""
    p = views[..., 0].reshape(len(views), -1).mean(1) / 255
    return np.stack([p, 1 - p], 1)


def test_measure_rows_and_table_are_exact_and_batch_independent() -> None:
    def view(red: int) -> np.ndarray:
        return np.full((4, 4, 3), red, np.uint8)

    probes = [
        Probe(0, "x", 0, "p0", ["sign", "car"], ["deletion"] * 2, np.stack([view(204), view(51), view(204)])),
        Probe(1, "x", 0, "p1", ["sign"], ["deletion"], np.stack([view(153), view(102)])),
        Probe(2, "y", 1, "p2", ["sign"], ["deletion"], np.stack([view(51), view(102)])),
    ]
    rows = measure(probes, _redness, batch_size=2)
    assert rows.equals(measure(probes, _redness, batch_size=1000))
    assert rows["effect"].round(6).tolist() == [0.6, 0.0, 0.2, 0.2]
    assert rows["flipped"].tolist() == [True, False, True, False]
    table = causal_table(rows, n_boot=200)
    sign_x = table[(table.city == "x") & (table.object == "sign")].iloc[0]
    assert sign_x.n_images == 2 and sign_x.effect == pytest.approx(0.4) and sign_x.flip_rate == 1.0
    assert sign_x.ci_low == pytest.approx(0.2) and sign_x.ci_high == pytest.approx(0.6)
    assert table.columns.tolist() == [
        "city", "object", "n_images", "effect", "ci_low", "ci_high", "flip_rate", "method"
    ]  # fmt: skip
    assert table[table.city == "x"]["object"].tolist() == ["sign", "car"]  # largest effect first
    assert set(table["method"]) == {"deletion"}
    with pytest.raises(ValueError, match="2 views for 2 objects"):
        Probe(3, "x", 0, "p3", ["sign", "car"], ["deletion"] * 2, np.stack([view(1), view(2)]))


def test_agreement_is_spearman_over_common_pairs() -> None:
    ref = pd.DataFrame(
        {
            "city": ["a"] * 4,
            "object": list("pqrs"),
            "effect": [0.4, 0.3, 0.2, 0.1],
            "method": "counterfactual",
        }
    )
    same = ref.assign(effect=[0.9, 0.5, 0.1, 0.0], method="deletion")
    flipped = ref.assign(effect=[0.0, 0.1, 0.5, 0.9], method="deletion")
    extra = pd.concat([same, same.head(1).assign(object="t")])
    assert causal_agreement(ref, same)["spearman"][0] == pytest.approx(1.0)
    assert causal_agreement(ref, flipped)["spearman"][0] == pytest.approx(-1.0)
    assert causal_agreement(ref, extra)["n_pairs"][0] == 4


def test_counterfactual_of_nothing_is_the_view_the_classifier_saw(cache_dir: Path) -> None:
    dm = _data(cache_dir, n=10)
    scenes = SyntheticCities(dm.root)
    labels = np.stack([GroundTruthSegmenter(dm.input_size).load(r) for r in dm.splits["test"]])
    n = len(labels)
    probes = list(causal_probes(dm, range(n), ["counterfactual", "deletion"], labels))
    only_deletion = list(causal_probes(dm, range(n), ["deletion"], labels))
    in_workers = list(causal_probes(dm, range(n), ["counterfactual", "deletion"], labels, workers=2))
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


def _tiny_network() -> nn.Module:
    """A small BN-CNN: learns the one-cue cities in about a second at 32 px (Simple needs far longer)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2),
    )  # fmt: skip


def test_trained_network_relies_on_the_only_cue(cache_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = _data(cache_dir)
    net = _tiny_network()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(20):
        for x, y in dm.train_dataloader():
            loss = nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = np.mean([(net(x).argmax(1) == y).float().mean().item() for x, y in dm.test_dataloader()])
    assert accuracy >= 0.9
    table, rows = causal_effects(net, causal_probes(dm, range(len(dm.splits["test"])), ["counterfactual"]))
    assert len(rows) == table["n_images"].sum()
    a = table[table.city == "a"].reset_index(drop=True)
    assert a["object"][0] == "signboard" and a["effect"][0] > 0.2 and a["ci_low"][0] > 0
    assert "signboard" not in set(table[table.city == "b"]["object"])  # never in city b's images
    common = table[table["object"].isin(["tree", "person", "car", "pole"])]
    assert (common["effect"].abs() < 0.06).all(), common
    # The callback writes the same counterfactual table plus deletion and their agreement.
    callback = CausalCallback(GroundTruthSegmenter(dm.input_size), n_boot=1000, cache_dir=str(cache_dir))
    callback.analyse(net, dm, tmp_path, [])
    written = pd.read_csv(tmp_path / "causal.csv")
    assert set(written["method"]) == {"counterfactual", "deletion"}
    cf = written[written.method == "counterfactual"].reset_index(drop=True)
    assert np.allclose(cf["effect"], table["effect"]) and cf["object"].tolist() == table["object"].tolist()
    agreement = pd.read_csv(tmp_path / "causal_agreement.csv")
    assert agreement["n_pairs"][0] == len(table) and -1 <= agreement["spearman"][0] <= 1
