"""Model parameter randomisation test: steps per architecture, rank correlations, the network left intact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from citylens.analysis.sanity import randomisation_steps, reinitialise, rowwise_spearman, sanity_check
from citylens.core.layers import resolve_target_layer
from citylens.models.build import build_model


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """A Simple network fitted for a few steps to tell bright-left from bright-right 32 px images."""
    torch.manual_seed(0)
    network = build_model("simple", 2, input_size=32)
    layer = resolve_target_layer(network, "last_block")[0]
    x = torch.randn(16, 3, 32, 32)
    y = torch.arange(16) % 2
    x[y == 0, :, :, :16] += 2
    x[y == 1, :, :, 16:] += 2
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(15):
        optimiser.zero_grad()
        nn.functional.cross_entropy(network(x), y).backward()
        optimiser.step()
    return network, layer, x, y


def test_steps_top_down_per_architecture():
    resnet = build_model("resnet18", 2, input_size=32)
    assert [n for n, _ in randomisation_steps(resnet)] == [
        "fc",
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "conv1",
    ]
    simple = build_model("simple", 2, input_size=32)
    steps = randomisation_steps(simple)
    assert [n for n, _ in steps] == ["classifier", "block4", "block3", "block2", "block1"]
    assert steps[0][1] == ["classifier.1", "classifier.3", "classifier.5"] and steps[1][1] == ["features.9"]
    simpler = build_model("simpler", 2, input_size=32)
    assert [p for _, paths in randomisation_steps(simpler)[1:] for p in paths] == [
        "features.6",
        "features.3",
        "features.0",
    ]
    with pytest.raises(ValueError, match=r"for a network of type Sequential: it is none of \['resnet18'"):
        randomisation_steps(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))


@pytest.mark.slow
def test_vgg11_blocks_are_its_conv_stages():
    vgg = build_model("vgg11", 2, input_size=32)
    steps = dict(randomisation_steps(vgg))
    assert list(steps) == ["classifier", "block5", "block4", "block3", "block2", "block1"]
    assert steps["block5"] == ["features.16", "features.18"] and steps["block1"] == ["features.0"]


def test_reinitialise_touches_only_the_named_block_and_is_seeded(trained):
    network = trained[0]
    before = {k: v.clone() for k, v in network.state_dict().items()}
    a, b = build_model("simple", 2, input_size=32), build_model("simple", 2, input_size=32)
    state = torch.random.get_rng_state()
    a.load_state_dict(before)
    b.load_state_dict(before)
    reinitialise(a, ["classifier.5"], seed=3)
    reinitialise(b, ["classifier.5"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
        assert torch.equal(value, before[key]) == (not key.startswith("classifier.5"))


def test_rowwise_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = np.round(rng.random((4, 5, 5)), 1)
    b = np.round(rng.random((4, 5, 5)), 1)
    b[1] = a[1] * 2 + 1
    b[2] = 0
    rho = rowwise_spearman(a, b)
    for i in (0, 3):
        assert rho[i] == pytest.approx(stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic)
    assert rho[1] == pytest.approx(1.0) and np.isnan(rho[2])


def test_trained_vs_itself_is_one_random_is_lower_and_network_untouched(trained):
    network, layer, x, y = trained
    network.train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    table = sanity_check(network, layer, x, y, seed=0, batch_size=8, n_boot=100)
    assert table["step_name"].tolist() == [
        "none",
        *[n for n, _ in randomisation_steps(network)],
        "full",
    ]
    assert table["step"].tolist() == list(range(len(table)))
    none, full = table.iloc[0], table.iloc[-1]
    assert none["mean_spearman"] == pytest.approx(1.0) and none["n_images"] + none["n_undefined"] == 16
    assert full["mean_spearman"] < 0.5 and full["ci_high"] < 0.9
    assert full["modules"].split() == [p for _, paths in randomisation_steps(network) for p in paths]
    assert network.training and all(p.requires_grad for p in network.parameters())
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key
    again = sanity_check(network, layer, x, y, seed=0, batch_size=16, n_boot=100)
    np.testing.assert_allclose(again["mean_spearman"], table["mean_spearman"], rtol=1e-6)


def test_an_explainer_blind_to_the_weights_stays_similar(trained):
    network, layer, x, y = trained

    def brightness(net: nn.Module, target_layer: nn.Module):
        return lambda images, targets: images.mean(1).sigmoid()

    table = sanity_check(network, layer, x, y, make_explainer=brightness, explainer_name="blind")
    assert (table["explainer"] == "blind").all()
    assert table["mean_spearman"].to_numpy() == pytest.approx(1.0)
