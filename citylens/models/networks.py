"""The paper's two shallow city classifiers, written as Table 1 reads (every conv followed by ReLU)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


def _conv_stack(spec: list[tuple[int, int]]) -> nn.Sequential:
    """Build conv(k x k, c) -> ReLU -> maxpool2 blocks from (kernel, channels) pairs, 'same' padding."""
    layers: list[nn.Module] = []
    in_ch = 3
    for kernel, out_ch in spec:
        layers += [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]
        in_ch = out_ch
    return nn.Sequential(*layers)


class PaperCNN(nn.Module):
    """Conv stack then fc-4096, fc-100, fc-num_classes; the flatten size is derived from the input size.

    The ReLUs are not in-place so the activation Grad-CAM reads at the last conv is not overwritten.
    """

    def __init__(self, spec: list[tuple[int, int]], num_classes: int, input_size: int = 224) -> None:
        super().__init__()
        self.features = _conv_stack(spec)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, input_size, input_size)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 4096),
            nn.ReLU(),
            nn.Linear(4096, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


SIMPLE_SPEC = [(5, 20), (7, 64), (5, 96), (7, 128)]
SIMPLER_SPEC = [(9, 20), (9, 64), (9, 96)]


class Simple(PaperCNN):
    """Table 1 'Simple'; `arch` names its layer presets (citylens.core.layers.arch_of)."""

    arch: ClassVar[str] = "simple"

    def __init__(self, num_classes: int, input_size: int = 224) -> None:
        super().__init__(SIMPLE_SPEC, num_classes, input_size)


class Simpler(PaperCNN):
    """Table 1 'Simpler'; `arch` names its layer presets (citylens.core.layers.arch_of)."""

    arch: ClassVar[str] = "simpler"

    def __init__(self, num_classes: int, input_size: int = 224) -> None:
        super().__init__(SIMPLER_SPEC, num_classes, input_size)


def simple(num_classes: int, input_size: int = 224) -> Simple:
    """Table 1 'Simple': conv5x5-20, conv7x7-64, conv5x5-96, conv7x7-128 (each + maxpool2), fc-4096-100-C."""
    return Simple(num_classes, input_size)


def simpler(num_classes: int, input_size: int = 224) -> Simpler:
    """Table 1 'Simpler': conv9x9-20, conv9x9-64, conv9x9-96 (each + maxpool2), fc-4096-100-C."""
    return Simpler(num_classes, input_size)
