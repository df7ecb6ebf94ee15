"""Concepts: NMF recovers planted concepts, removal importance is exact on hand-built networks and batched
right on the four architectures, lift and names, Hungarian matching, and on one-cue synthetic cities the cue
city's most important concept is named after the cue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import nnls
from torch import nn

from citylens.analysis.concepts import (
    EARLIER_LAYERS,
    concept_importance,
    concept_maps,
    concept_names,
    concept_objects,
    concept_sobol,
    concept_strength,
    fit_concepts,
    importance_table,
    layer_activations,
    match_concepts,
    nnls_fixed_bank,
    object_importance,
    probability_drop,
    removal_log_probs,
    upsample_maps,
)
from citylens.core.ade20k import class_index
from citylens.core.layers import resolve_target_layer
from citylens.data.synthetic import OPTIONAL
from citylens.segment import GroundTruthSegmenter


def _planted(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations (n, 6, 4, 4) = U W of two concepts on disjoint channels, and the true U and W."""
    rng = np.random.default_rng(seed)
    w = np.array([[3.0, 1.0, 2.0, 0, 0, 0], [0, 0, 0, 1.0, 4.0, 2.0]], np.float32)
    u = rng.random((n, 2, 4, 4)).astype(np.float32) * (rng.random((n, 2, 4, 4)) < 0.6)
    return np.einsum("nkhw,kc->nchw", u, w), u, w


def test_nmf_recovers_planted_concepts_and_their_maps():
    a, u, w = _planted()
    bank = fit_concepts(a, 2, seed=0)
    assert bank.shape == (2, 6) and bank.dtype == np.float32
    assert np.array_equal(bank, fit_concepts(a, 2, seed=0))  # deterministic for a seed
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    cosine = bank @ unit.T
    order = cosine.argmax(1)
    assert sorted(order) == [0, 1] and cosine.max(1).min() > 0.999, cosine
    maps = concept_maps(a, bank)
    assert maps.shape == (12, 2, 4, 4) and maps.dtype == torch.float32
    # The coefficients are the planted ones, scaled by the true rows' lengths (the bank's rows are unit).
    expected = u[:, order] * np.linalg.norm(w, axis=1)[order][None, :, None, None]
    np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(concept_strength(maps), expected.mean(axis=(2, 3)), rtol=1e-2)


def test_maps_are_the_nonnegative_least_squares_coefficients():
    rng = np.random.default_rng(1)
    bank = rng.random((5, 8)).astype(np.float32)  # overlapping rows: the constraint u >= 0 binds
    rows = rng.random((50, 8)).astype(np.float32)
    u = nnls_fixed_bank(torch.from_numpy(rows), torch.from_numpy(bank)).numpy()
    expected = np.stack([nnls(bank.T.astype(np.float64), r.astype(np.float64))[0] for r in rows])
    assert (expected == 0).mean() > 0.2  # a test of the constraint, not only of least squares
    np.testing.assert_allclose(u, expected, atol=1e-4)
    maps = concept_maps(rows.reshape(2, 5, 5, 8).transpose(0, 3, 1, 2), bank)
    np.testing.assert_allclose(maps.numpy(), u.reshape(2, 5, 5, 5).transpose(0, 3, 1, 2), atol=1e-6)


def test_bad_arguments_are_named():
    a, _, _ = _planted()
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="concepts.k"):
            fit_concepts(a, k)
    with pytest.raises(ValueError, match="exceed the layer's 6 channels"):
        fit_concepts(a, 7)
    with pytest.raises(ValueError, match="bank"):
        concept_maps(a, np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="activations: expected 4 dims"):
        fit_concepts(a[0], 2)
    with pytest.raises(ValueError, match="concepts.layer: unknown layer 'features.99'"):
        layer_activations(nn.Sequential(nn.ReLU()), "features.99", torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="label_maps"):
        concept_objects(torch.zeros(2, 3, 8, 8), np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="over the same images"):
        match_concepts(np.zeros((5, 2)), np.zeros((4, 2)))


def _driven() -> nn.Module:
    """Logit of city 0 = 3 x the mean of channel 0 at layer "0", city 1's logit 0: channel 1 does nothing."""
    net = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[3].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.0]]))
        net[3].bias.zero_()
    return net


def test_removal_importance_is_exact_on_a_hand_built_network():
    net = _driven()
    x = torch.zeros(3, 2, 4, 4)
    x[:, 0] = torch.arange(1, 4, dtype=torch.float32)[:, None, None] / 4  # channel 1 stays 0
    x[0, 0, 0, 0] = -1.0  # clamped by the layer's ReLU
    acts = layer_activations(net, "0", x, batch_size=2)
    assert torch.equal(acts, x.clamp_min(0))
    bank = np.eye(2, dtype=np.float32)
    maps = concept_maps(acts, bank)
    targets = [0, 0, 1]
    net.train()
    net[1].eval()
    importance = concept_importance(net, "0", x, targets, bank, maps, batch_size=2)
    assert [m.training for m in net] == [True, False, True, True]  # each module's mode is left as it was
    assert importance.shape == (3, 2)
    assert np.array_equal(importance[:, 1], np.zeros(3))  # a concept with zero coefficients
    m = acts[:, 0].mean(dim=(1, 2)).double()
    log_p0 = 3 * m - torch.log1p(torch.exp(3 * m))  # log P(city 0); without channel 0: log 1/2
    expected = torch.cat([log_p0[:2], -torch.log1p(torch.exp(3 * m[2:]))]) + np.log(2)
    np.testing.assert_allclose(importance[:, 0], expected.numpy(), rtol=1e-5)
    assert (importance[:2, 0] > 0).all() and importance[2, 0] < 0  # supports city 0, speaks against city 1
    # CRAFT's total Sobol index: 0 for the absent concept, and all of the variance for the only one present.
    sobol = concept_sobol(net, "0", x, targets, bank, maps, n_designs=32)
    assert np.array_equal(sobol[:, 1], np.zeros(3)) and (sobol[:, 0] > 0.5).all()
    # The residual is kept: a one-concept bank along channel 0 + 1 removes only its projection.
    half = np.full((1, 2), np.sqrt(0.5), np.float32)
    importance_half = concept_importance(net, "0", x, targets, half, concept_maps(acts, half))
    assert (importance_half[:2, 0] > 0).all() and (importance_half[:2, 0] < importance[:2, 0]).all()


@pytest.mark.parametrize(
    "arch,shape",
    [("vgg11", (512, 8, 8)), ("resnet18", (128, 8, 8)), ("simple", (96, 16, 16)), ("simpler", (64, 32, 32))],
)
def test_earlier_layers_and_batched_removal_on_every_architecture(networks, one_thread, arch, shape):
    net = networks[arch].eval()  # the plain way below runs the network as it is: no dropout, BN statistics
    assert EARLIER_LAYERS[arch] in {"features.12", "layer2.-1", "features.7", "features.4"}
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    acts = layer_activations(net, EARLIER_LAYERS[arch], x, batch_size=2)
    assert acts.shape == (3, *shape) and acts.min() >= 0
    bank = fit_concepts(acts, 3, seed=0)
    maps = concept_maps(acts, bank)
    targets = [0, 1, 2]
    importance = concept_importance(net, EARLIER_LAYERS[arch], x, targets, bank, maps, batch_size=2)
    # Against the plain way: one full forward pass per image and concept, the layer's output replaced.
    module, _ = resolve_target_layer(net, EARLIER_LAYERS[arch])
    w = torch.from_numpy(bank)
    expected = np.zeros((3, 3))
    with torch.no_grad():
        base = net(x).log_softmax(1)[range(3), targets]
        for j in range(3):
            edit = lambda _m, _i, out, j=j: (out - maps[:, j, None] * w[j][None, :, None, None]).clamp_min(0)  # noqa: E731
            handle = module.register_forward_hook(edit)
            expected[:, j] = (base - net(x).log_softmax(1)[range(3), targets]).numpy()
            handle.remove()
    np.testing.assert_allclose(importance, expected, atol=1e-5)
    chunked = concept_importance(net, EARLIER_LAYERS[arch], x, targets, bank, maps, batch_size=2, max_rows=3)
    np.testing.assert_allclose(chunked, expected, atol=1e-5)  # the edits in several passes
    assert np.abs(expected).max() > 1e-4  # the edits change the output


def test_importance_table_means_intervals_and_order():
    importance = np.array([[0.1, 0.5], [0.3, 0.7], [0.2, -0.1], [0.0, 0.4]])
    table = importance_table(importance, [0, 0, 1, 1], ["x", "y"], n_boot=500)
    assert table[["city", "concept"]].values.tolist() == [["x", 1], ["x", 0], ["y", 1], ["y", 0]]
    np.testing.assert_allclose(table["importance"], [0.6, 0.2, 0.15, 0.1])
    assert (table["importance_low"] <= table["importance"]).all()
    assert (table["importance"] <= table["importance_high"]).all()
    x1 = table.iloc[0]
    assert x1.importance_low == pytest.approx(0.5) and x1.importance_high == pytest.approx(0.7)
    assert table["n_images"].tolist() == [2, 2, 2, 2]


def test_lift_of_a_concept_on_an_object_and_names():
    labels = np.full((2, 8, 8), class_index("road"), np.uint8)
    labels[0, :4, :4] = class_index("signboard")  # 16 of 128 pixels: share 1/8
    labels[1, 6:, :] = class_index("car")
    maps = torch.zeros(2, 3, 8, 8)
    maps[:, 0] = torch.from_numpy(labels == class_index("signboard")).float() * 2.0
    maps[:, 1] = 1.0  # everywhere: lift 1 on every object
    table = concept_objects(maps, labels)
    sign = table[(table.concept == 0) & (table.object == "signboard")].iloc[0]
    assert sign.pixel_share == pytest.approx(1 / 8) and sign.mass_share == pytest.approx(1.0)
    assert sign.lift == pytest.approx(8.0)
    assert np.allclose(table[table.concept == 1]["lift"], 1.0)
    names = concept_names(table, min_lift=1.5).set_index("concept")
    assert names.loc[0, "object"] == "signboard" and names.loc[0, "lift"] == pytest.approx(8.0)
    assert names.loc[1, "object"] is None  # matches no object
    only_cars = concept_objects(maps, labels, removable_ids=[class_index("car")])
    assert set(only_cars["object"]) == {"car"}
    up = upsample_maps(torch.ones(1, 2, 2, 2), 8)
    assert up.shape == (1, 2, 8, 8) and torch.allclose(up, torch.ones(1, 2, 8, 8))
    # Maps on a coarser grid are upsampled inside, a chunk of images at a time, to the same table.
    coarse = torch.rand(5, 3, 4, 4)
    labels = np.random.default_rng(0).integers(0, 4, (5, 8, 8)).astype(np.uint8)
    pd.testing.assert_frame_equal(
        concept_objects(coarse, labels, chunk=2), concept_objects(upsample_maps(coarse, 8), labels)
    )


def test_hungarian_matching_recovers_a_permutation():
    rng = np.random.default_rng(0)
    a = rng.random((40, 5))
    perm = np.array([3, 0, 4, 1, 2])
    b = a[:, perm] * rng.uniform(0.5, 2.0, 5) + 0.01 * rng.random((40, 5))
    match = match_concepts(a, b)
    assert sorted(match.pairs) == sorted((int(perm[j]), j) for j in range(5))
    assert match.agreement > 0.99
    unrelated = match_concepts(a, rng.random((40, 5)))
    assert unrelated.agreement < 0.5
    constant = match_concepts(a[:, :2], np.ones((40, 2)))
    assert constant.agreement == 0.0  # a constant strength correlates with nothing


def test_the_cue_citys_top_concept_is_named_after_the_cue(one_cue, one_thread):
    net, dm = one_cue
    layer = "6"  # the tiny network's second conv block (16x16 at 32 px), one stage before the last conv
    _, val, _ = next(dm.split_view("val").batches(len(dm.splits["val"])))
    _, test, records = next(dm.split_view("test").batches(len(dm.splits["test"])))
    bank = fit_concepts(layer_activations(net, layer, val), 6, seed=0)  # fitted on other images
    maps = concept_maps(layer_activations(net, layer, test), bank)
    targets = dm.targets("test")
    table = importance_table(concept_importance(net, layer, test, targets, bank, maps), targets, dm.cities)
    labels = np.stack([GroundTruthSegmenter(dm.input_size).load(r) for r in records])
    removable = [class_index(name) for name in OPTIONAL]
    names = concept_names(concept_objects(upsample_maps(maps, 32), labels, removable)).set_index("concept")
    top = table[table.city == "a"].iloc[0]
    assert top.importance_low > 0, table
    assert names.loc[top.concept, "object"] == "signboard", (table, names)


def test_object_importance_keeps_each_objects_most_important_concept():
    table = pd.DataFrame(
        {
            "city": ["a", "a", "a", "a", "b"],
            "concept": [0, 1, 2, 3, 0],
            "importance": [0.1, 0.5, 0.3, 0.9, 0.2],
            "importance_low": [0.0, 0.4, 0.2, 0.8, 0.1],
            "importance_high": [0.2, 0.6, 0.4, 1.0, 0.3],
            "object": ["fence", "fence", "car", None, "fence"],
        }
    )
    ranked = object_importance(table)
    assert ranked[["city", "object", "concept"]].values.tolist() == [
        ["a", "fence", 1],
        ["a", "car", 2],
        ["b", "fence", 0],
    ]
    assert ranked["importance"].tolist() == [0.5, 0.3, 0.2]
    assert ranked["importance_low"].tolist() == [0.4, 0.2, 0.1] and ranked["kept"].all()
    assert object_importance(table.assign(object=None)).empty


def test_probability_drop_is_the_drop_of_p_behind_the_drop_of_log_p():
    # P 0.8 -> 0.2: log P falls by log 4, P by 0.6; P 0.5 -> 0.75 (the concept spoke against it): -0.25.
    importance = np.array([[np.log(4.0), 0.0], [np.log(0.5 / 0.75), np.log(0.5 / 0.25)]])
    drop = probability_drop(importance, np.array([0.8, 0.5]))
    assert drop == pytest.approx(np.array([[0.6, 0.0], [-0.25, 0.25]]))
    with pytest.raises(ValueError, match="need"):
        probability_drop(importance, np.array([0.8]))


def test_removal_log_probs_start_with_the_image_itself_in_eval_mode():
    # Column 0 (nothing removed: the factorisation plus its residual) is the plain forward pass's log P of the
    # target, in eval mode, the mode restored; concept_importance is column 0 minus the others.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, 3, 8, 8)
    net(x)
    targets = [0, 1, 2, 1, 0]
    acts = layer_activations(net, "2", x)
    bank = fit_concepts(acts, 2, seed=0)
    maps = concept_maps(acts, bank)
    net.train()
    logp = removal_log_probs(net, "2", x, targets, bank, maps, batch_size=2)
    assert net.training and logp.shape == (5, 3)
    net.eval()
    with torch.no_grad():
        expected = net(x).log_softmax(1)[torch.arange(5), torch.tensor(targets)]
    assert logp[:, 0] == pytest.approx(expected.double().numpy(), abs=1e-5)
    importance = concept_importance(net, "2", x, targets, bank, maps, batch_size=2)
    assert np.array_equal(importance, logp[:, :1] - logp[:, 1:])
