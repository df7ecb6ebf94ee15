"""build_model: the four architectures by name (a network's layer presets: citylens.core.layers.arch_of)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from citylens.core.layers import ARCHITECTURES
from citylens.models.networks import simple, simpler


def _torchvision(name: str, weights: str | None) -> nn.Module:
    """A torchvision VGG11/ResNet18; ImageNet weights from a local file."""
    network = getattr(torchvision.models, name)(weights=None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.weights: {path} does not exist; download the torchvision ImageNet state dict "
                f"for {name} yourself and give its local path (citylens never downloads weights)"
            )
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network


def _vgg11(num_classes: int, input_size: int, weights: str | None) -> nn.Module:
    network = _torchvision("vgg11", weights)
    network.classifier[-1] = nn.Linear(network.classifier[-1].in_features, num_classes)
    # In-place ReLUs would overwrite the activation saved at the target layer (docs/explainers.md, pitfalls).
    for module in network.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return network


def _resnet18(num_classes: int, input_size: int, weights: str | None) -> nn.Module:
    network = _torchvision("resnet18", weights)
    network.fc = nn.Linear(network.fc.in_features, num_classes)
    return network


def _from_scratch(make: Callable[[int, int], nn.Module]) -> Callable[[int, int, str | None], nn.Module]:
    """A builder for a network that has no pretrained weights (refuses `weights`)."""

    def build(num_classes: int, input_size: int, weights: str | None) -> nn.Module:
        if weights:
            raise ValueError(f"model.weights: {make.__name__} has no pretrained weights; leave it null")
        return make(num_classes, input_size)

    return build


# Architecture name -> (num_classes, input_size, weights) -> network with a num_classes-way head.
BUILDERS: dict[str, Callable[[int, int, str | None], nn.Module]] = {
    "vgg11": _vgg11,
    "resnet18": _resnet18,
    "simple": _from_scratch(simple),
    "simpler": _from_scratch(simpler),
}


def build_model(name: str, num_classes: int, input_size: int = 224, weights: str | None = None) -> nn.Module:
    """The network of one of ARCHITECTURES with a `num_classes`-way head.

    `weights` is a local torchvision state-dict file (ImageNet pretraining, VGG11/ResNet18 only). The network
    carries its layer presets: `citylens.core.layers.resolve_target_layer(network, "last_block")`.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name: unknown architecture {name!r}; choose one of {list(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return BUILDERS[name](num_classes, input_size, weights)
