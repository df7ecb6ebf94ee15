"""The paper's Simple and Simpler networks: Table 1's layers, the flatten size from the input size, logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from citylens.models.networks import SIMPLE_SPEC, SIMPLER_SPEC, PaperCNN, simple, simpler


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return None


def _convs(network: PaperCNN) -> list[nn.Conv2d]:
    return [m for m in network.features if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    ("make", "spec"),
    [(simple, [(5, 20), (7, 64), (5, 96), (7, 128)]), (simpler, [(9, 20), (9, 64), (9, 96)])],
)
def test_conv_stack_is_table_1(make, spec):
    network = make(3, input_size=32)
    convs = _convs(network)
    assert [(c.kernel_size[0], c.out_channels) for c in convs] == spec
    assert [c.in_channels for c in convs] == [3] + [ch for _, ch in spec[:-1]]
    assert [c.padding[0] for c in convs] == [k // 2 for k, _ in spec]  # 'same' padding
    kinds = [type(m) for m in network.features]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * len(spec)
    assert SIMPLE_SPEC == [(5, 20), (7, 64), (5, 96), (7, 128)]
    assert SIMPLER_SPEC == [(9, 20), (9, 64), (9, 96)]


@pytest.mark.parametrize(
    ("make", "size", "flat"),
    [
        (simple, 32, 128 * 2 * 2),  # four max-pools: 32 -> 2
        (simple, 64, 128 * 4 * 4),
        (simple, 50, 128 * 3 * 3),  # 50 -> 25 -> 12 -> 6 -> 3 (floor)
        (simpler, 32, 96 * 4 * 4),  # three max-pools: 32 -> 4
        (simpler, 48, 96 * 6 * 6),
    ],
)
def test_flatten_size_follows_the_input_size(make, size, flat):
    network = make(5, input_size=size)
    linears = [m for m in network.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(flat, 4096), (4096, 100), (100, 5)]
    x = torch.rand(2, 3, size, size)
    assert network.features(x).flatten(1).shape == (2, flat)
    assert network(x).shape == (2, 5)


def test_a_network_built_for_one_size_refuses_another():
    network = simple(2, input_size=32)
    with pytest.raises(RuntimeError):
        network(torch.rand(1, 3, 64, 64))


def test_forward_is_the_classifier_on_the_features_and_relus_are_not_in_place():
    torch.manual_seed(0)
    network = simpler(4, input_size=32).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = network.classifier(network.features(x))
        logits = network(x)
    assert torch.equal(logits, expected)
    assert not torch.equal(logits[0], logits[1])  # per-image outputs, not one broadcast row
    relus = [m for m in network.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3 + 2 and not any(m.inplace for m in relus)
    # The last conv's activation survives the forward pass (Grad-CAM reads it): no ReLU overwrites it.
    kept, copies = [], []

    def keep(module, inputs, output):
        kept.append(output)
        copies.append(output.clone())

    handle = _convs(network)[-1].register_forward_hook(keep)
    with torch.no_grad():
        network(x)
    handle.remove()
    assert (copies[0] < 0).any() and torch.equal(kept[0], copies[0])
