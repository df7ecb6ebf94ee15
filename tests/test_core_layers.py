"""Target-layer presets and specs: resolved per architecture, bad ones refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from citylens.core.layers import resolve_target_layer
from citylens.explain import GradCAM, build_explainer


def test_layer_presets_resolve_per_architecture(networks) -> None:
    vgg, resnet, simple = networks["vgg11"], networks["resnet18"], networks["simple"]
    assert resolve_target_layer(vgg, "vgg11", "last_block") == (vgg.features[-1], "features.-1")
    assert resolve_target_layer(vgg, "vgg11", "last_conv") == (vgg.features[-2], "features.-2")
    assert isinstance(vgg.features[-2], nn.ReLU) and isinstance(vgg.features[-3], nn.Conv2d)
    assert resolve_target_layer(resnet, "resnet18", "last_conv") == (resnet.layer4[-1], "layer4.-1")
    assert resolve_target_layer(resnet, "resnet18", "layer3") == (resnet.layer3[-1], "layer3.-1")
    assert resolve_target_layer(resnet, "resnet18", "layer2") == (resnet.layer2[-1], "layer2.-1")
    assert resolve_target_layer(simple, "simple", "features.3") == (simple.features[3], "features.3")
    assert resolve_target_layer(simple, None, "features.-2") == (simple.features[-2], "features.-2")
    # No in-place ReLU anywhere in the three nets whose last_conv is a ReLU's output.
    for arch in ("vgg11", "simple", "simpler"):
        relus = [m for m in networks[arch].modules() if isinstance(m, nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)
    # last_conv is twice last_block's resolution except on ResNet18 (the same layer).
    for arch, network in networks.items():
        sizes = {
            preset: GradCAM(network, preset, arch=arch).low_res(torch.randn(1, 3, 64, 64))[0].shape[-1]
            for preset in ("last_block", "last_conv")
        }
        assert sizes["last_conv"] == sizes["last_block"] * (1 if arch == "resnet18" else 2), arch


def test_bad_layer_specs_and_names_are_rejected(networks) -> None:
    vgg, simple = networks["vgg11"], networks["simple"]
    with pytest.raises(
        ValueError, match=r"'layer3' is not available here: vgg11 has \['last_block', 'last_conv'\]"
    ):
        resolve_target_layer(vgg, "vgg11", "layer3")
    with pytest.raises(ValueError, match="'last_cnv' is neither the presets for simple"):
        resolve_target_layer(simple, "simple", "last_cnv")
    with pytest.raises(ValueError, match="presets need the architecture"):
        GradCAM(simple, "last_conv")
    with pytest.raises(ValueError, match="not a module"):
        resolve_target_layer(simple, "simple", "features.0.weight")
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'"):
        resolve_target_layer(simple, "alexnet", "last_block")
    with pytest.raises(
        ValueError, match=r"unknown method 'gradcam\+'; choose one of \['gradcam', 'hirescam'"
    ):
        build_explainer("gradcam+", simple, "last_block", arch="simple")
