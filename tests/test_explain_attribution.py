"""The captum attribution explainers: parity with captum called directly, completeness, object values,
options, and on one-cue synthetic cities the planted cue credited most."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, NoiseTunnel
from torch import nn

from citylens.analysis.attribution import attribution_table, object_values
from citylens.core.ade20k import class_index
from citylens.core.view import to_input
from citylens.explain import build_explainer
from citylens.explain.attribution import compact_mask, fill_images
from citylens.segment import GroundTruthSegmenter


def _log_probs(network: nn.Module):
    return lambda x: network(x).log_softmax(1)


@pytest.fixture(scope="module")
def inputs(networks, random_images) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    network = networks["simpler"].eval()
    return network, to_input(random_images(6, 64)), torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("baseline", ["mean", "black", "blur"])
def test_ig_matches_captum_and_is_complete(inputs, baseline: str):
    network, x, targets = inputs
    maps, logits = build_explainer("ig", network, "input", options={"baseline": baseline}).low_res(x, targets)
    reference = {
        "mean": torch.zeros_like(x),
        "black": ((torch.zeros(1, 3, 1, 1) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                  / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)).expand_as(x),
        "blur": fill_images(x, "blur", 0.1),
    }[baseline]  # fmt: skip
    expected, delta = IntegratedGradients(_log_probs(network)).attribute(
        x, baselines=reference, target=targets, n_steps=16, return_convergence_delta=True
    )
    torch.testing.assert_close(maps, expected.sum(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, network(x), rtol=0, atol=1e-6)
    # Completeness: the map sums to f(image) - f(baseline), up to captum's own convergence delta.
    with torch.no_grad():
        f = _log_probs(network)
        gap = f(x).gather(1, targets[:, None])[:, 0] - f(reference).gather(1, targets[:, None])[:, 0]
    assert torch.all((maps.sum(dim=(1, 2)) - gap).abs() <= delta.abs() + 1e-5)
    assert gap.abs().max() > 0.01  # a non-trivial check: the baseline changes the output


def test_ixg_and_smoothgrad_match_captum(inputs):
    network, x, targets = inputs
    maps, _ = build_explainer("ixg", network, "input").low_res(x, targets)
    expected = InputXGradient(_log_probs(network)).attribute(x.clone().requires_grad_(), target=targets)
    torch.testing.assert_close(maps, expected.sum(1), rtol=0, atol=1e-6)
    options = {"nt_samples": 3, "stdev": 0.2, "seed": 5}
    smooth, _ = build_explainer("smoothgrad", network, "input", options=options).low_res(x, targets)
    torch.manual_seed(5)
    expected = NoiseTunnel(InputXGradient(_log_probs(network))).attribute(
        x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=3, stdevs=0.2, target=targets
    )
    torch.testing.assert_close(smooth, expected.sum(1), rtol=0, atol=1e-6)
    assert (smooth - maps).abs().max() > 0.1 * maps.abs().max()  # the noise changes the map


def test_object_explainers_give_each_object_its_value(inputs):
    network, x, targets = inputs
    labels = torch.zeros(6, 64, 64, dtype=torch.uint8)
    labels[:, :20] = 2
    labels[:, 40:, :30] = 255
    occlusion, _ = build_explainer("occlusion", network, "input").low_res(x, targets, labels=labels)
    f = _log_probs(network)
    filled = x.clone()
    region = (labels == 2)[:, None].expand_as(x)
    filled[region] = fill_images(x, "mean")[region]
    with torch.no_grad():
        drop = (f(x) - f(filled)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(occlusion[:, 0, 0], drop, rtol=0, atol=1e-5)
    assert torch.equal(occlusion[:, 5, 5], occlusion[:, 19, 63])  # one value on every pixel of the object
    expected = FeatureAblation(f).attribute(
        x, baselines=fill_images(x, "mean"), target=targets, feature_mask=compact_mask(labels)
    )
    torch.testing.assert_close(occlusion, expected[:, 0], rtol=0, atol=1e-6)
    # Shapley values of the objects sum to f(image) - f(every object filled) for any sampled orders.
    shapley, _ = build_explainer("shapley", network, "input", options={"n_samples": 2}).low_res(
        x, targets, labels=labels
    )
    values, _ = object_values(shapley, labels, "mean")
    unlabelled = shapley[:, 63, 0]
    with torch.no_grad():
        total = (f(x) - f(fill_images(x, "mean"))).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(torch.from_numpy(values.sum(1)).float() + unlabelled, total, rtol=0, atol=1e-5)


def test_the_empty_baseline_is_required_and_used(inputs):
    network, x, targets = inputs
    explainer = build_explainer("ig", network, "input", options={"baseline": "empty"})
    with pytest.raises(ValueError, match="baseline 'empty'"):
        explainer.low_res(x, targets)
    empty = x.flip(0)
    maps, _ = explainer.low_res(x, targets, baselines=empty)
    expected = IntegratedGradients(_log_probs(network)).attribute(
        x, baselines=empty, target=targets, n_steps=16
    )
    torch.testing.assert_close(maps, expected.sum(1), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "name,options,key",
    [
        ("ig", {"baseline": "white"}, "explainer.options.baseline"),
        ("ig", {"n_steps": 0}, "explainer.options.n_steps"),
        ("ig", {"steps": 4}, "explainer.options: unknown key"),
        ("smoothgrad", {"method": "gradcam"}, "explainer.options.method"),
        ("smoothgrad", {"stdev": -1}, "explainer.options.stdev"),
        ("occlusion", {"fill": "zero"}, "explainer.options.fill"),
        ("shapley", {"n_samples": 1.5}, "explainer.options.n_samples"),
        ("gradcam", {"n_steps": 4}, "explainer.options: gradcam takes no options"),
    ],
)
def test_bad_options_are_refused_naming_the_key(networks, name: str, options: dict, key: str):
    layer = "last_block" if name == "gradcam" else "input"
    with pytest.raises(ValueError, match=f"^{key}"):
        build_explainer(name, networks["simpler"], layer, options=options)


def test_attribution_explainers_explain_the_input(networks):
    with pytest.raises(ValueError, match="^explainer.layer: .* explains the network's input"):
        build_explainer("ig", networks["simpler"], "last_block")


@pytest.mark.parametrize("name", ["ig", "occlusion"])
def test_the_planted_cue_has_the_largest_object_attribution(one_cue, name: str):
    net, dm = one_cue
    _, views, records = next(dm.split_view("test").batches(len(dm.splits["test"])))
    labels = torch.from_numpy(np.stack([GroundTruthSegmenter(dm.input_size).load(r) for r in records]))
    targets = torch.from_numpy(dm.targets("test"))
    explainer = build_explainer(name, net, "input")
    maps, logits = explainer.low_res(to_input(views), targets, labels=labels)
    assert (logits.argmax(1) == targets).float().mean() >= 0.8
    values, pixels = object_values(maps, labels, explainer.object_statistic)
    table = attribution_table(values, pixels, [r.city for r in records], min_mean_pixels=0, n_boot=200)
    a = table[table.city == "a"].sort_values("attribution", ascending=False).set_index("object")
    assert a.index[0] == "signboard", a
    cue = a.loc["signboard", "attribution"]
    # log P(a) rests on the signboard (measured: 1.58 for ig, 1.54 for occlusion; the next object 0.25-0.26).
    assert cue > 1.0 and a.loc["signboard", "ci_low"] > 0.5 and cue > 4 * a["attribution"].iloc[1], a
    unplanted = a.loc[a.index.isin(["tree", "person", "car", "pole"]), "attribution"]
    assert len(unplanted) == 4 and (unplanted.abs() < 0.15 * cue).all(), a
    assert class_index("signboard") not in set(table[table.city == "b"]["object_id"])
