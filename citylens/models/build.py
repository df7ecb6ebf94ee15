"""build_model: the four architectures by name (their explainer layer presets: citylens.core.layers)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from citylens.core.layers import ARCHITECTURES, DEFAULT_TARGET_LAYERS, resolve_layer
from citylens.models.networks import simple, simpler


def _torchvision(name: str, num_classes: int, weights: str | None) -> nn.Module:
    """A torchvision VGG11/ResNet18 with its last linear layer resized; ImageNet weights from a local file."""
    network = getattr(torchvision.models, name)(weights=None)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.weights: {path} does not exist; download the torchvision ImageNet state dict "
                f"for {name} yourself and give its local path (citylens never downloads weights)"
            )
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if name == "vgg11":
        network.classifier[-1] = nn.Linear(network.classifier[-1].in_features, num_classes)
        # In-place ReLUs would overwrite the activation saved at the target layer (facts.md pitfalls).
        for module in network.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
    else:
        network.fc = nn.Linear(network.fc.in_features, num_classes)
    return network


def build_model(
    name: str,
    num_classes: int,
    input_size: int = 224,
    weights: str | None = None,
    target_layer: str | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Return (network, target_layer module) for one of ARCHITECTURES.

    `weights` is a local torchvision state-dict file (ImageNet pretraining, VGG11/ResNet18 only);
    `target_layer` a dotted path overriding DEFAULT_TARGET_LAYERS.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name: unknown architecture {name!r}; choose one of {list(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if name in ("simple", "simpler"):
        if weights:
            raise ValueError(f"model.weights: {name} has no pretrained weights; leave it null")
        network = simple(num_classes, input_size) if name == "simple" else simpler(num_classes, input_size)
    else:
        network = _torchvision(name, num_classes, weights)
    return network, resolve_layer(network, target_layer or DEFAULT_TARGET_LAYERS[name])
