"""build_model: one builder per architecture, heads sized to the cities, weights only where they exist."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from citylens.core.layers import (
    ARCHITECTURES,
    DEFAULT_TARGET_LAYERS,
    arch_of,
    resolve_layer,
    resolve_target_layer,
)
from citylens.models.build import BUILDERS, build_model


def test_every_architecture_has_one_builder():
    assert list(BUILDERS) == list(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_has_one_output_per_city_and_the_network_brings_its_presets(arch: str):
    network = build_model(arch, 3, input_size=64)
    assert network(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    assert arch_of(network) == arch
    assert resolve_target_layer(network, "last_block") == (
        resolve_layer(network, DEFAULT_TARGET_LAYERS[arch]),
        DEFAULT_TARGET_LAYERS[arch],
    )


def test_vgg11_relus_are_not_in_place():
    network = build_model("vgg11", 2, input_size=32)
    relus = [m for m in network.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


@pytest.mark.parametrize("arch", ["simple", "simpler"])
def test_networks_without_pretraining_refuse_weights(arch: str, tmp_path):
    with pytest.raises(ValueError, match=f"model.weights: {arch} has no pretrained weights"):
        build_model(arch, 2, weights=str(tmp_path / "w.pth"))


def test_missing_weights_file_is_named():
    with pytest.raises(FileNotFoundError, match="model.weights: /nonexistent/w.pth does not exist"):
        build_model("resnet18", 2, weights="/nonexistent/w.pth")


def test_bad_names_and_class_counts_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'"):
        build_model("alexnet", 2)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        build_model("simple", 1)
