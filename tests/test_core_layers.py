"""Target-layer presets and specs: a network brings its presets (found from its type), bad specs are refused
by name."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from citylens.core.layers import ARCHITECTURES, arch_of, layer_presets, resolve_layer, resolve_target_layer
from citylens.explain import GradCAM, build_explainer

# Every (architecture, preset) -> the dotted path the architecture-keyed table gave before the network
# carried its presets (LAYER_PRESETS as of main 4f2087c), written out so a change of resolution shows.
EXPECTED_PATHS = {
    ("vgg11", "last_block"): "features.-1",
    ("vgg11", "last_conv"): "features.-2",
    ("resnet18", "last_block"): "layer4.-1",
    ("resnet18", "last_conv"): "layer4.-1",
    ("resnet18", "layer3"): "layer3.-1",
    ("resnet18", "layer2"): "layer2.-1",
    ("simple", "last_block"): "features.-1",
    ("simple", "last_conv"): "features.-2",
    ("simpler", "last_block"): "features.-1",
    ("simpler", "last_conv"): "features.-2",
}


def test_every_network_resolves_every_preset_of_its_architecture_as_before(networks) -> None:
    for arch, network in networks.items():
        assert arch_of(network) == arch
        expected = {preset: path for (a, preset), path in EXPECTED_PATHS.items() if a == arch}
        assert layer_presets(network) == expected, arch
        for preset, path in expected.items():
            module, resolved = resolve_target_layer(network, preset)
            assert resolved == path and module is resolve_layer(network, path), (arch, preset)
    assert {a for a, _ in EXPECTED_PATHS} == set(ARCHITECTURES) == set(networks)


def test_the_architecture_is_read_from_the_type_and_layout() -> None:
    assert arch_of(torchvision.models.vgg11(num_classes=2)) == "vgg11"
    assert arch_of(torchvision.models.resnet18(num_classes=2)) == "resnet18"
    # Other members of the families would take presets pointing elsewhere (EARLIER_LAYERS, the cascade).
    assert arch_of(torchvision.models.vgg11_bn(num_classes=2)) is None
    assert arch_of(torchvision.models.vgg13(num_classes=2)) is None
    assert arch_of(torchvision.models.resnet34(num_classes=2)) is None
    assert arch_of(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) is None
    assert layer_presets(nn.Identity()) == {}


def test_layer_presets_resolve_per_architecture(networks) -> None:
    vgg, resnet, simple = networks["vgg11"], networks["resnet18"], networks["simple"]
    assert resolve_target_layer(vgg, "last_block") == (vgg.features[-1], "features.-1")
    assert resolve_target_layer(vgg, "last_conv") == (vgg.features[-2], "features.-2")
    assert isinstance(vgg.features[-2], nn.ReLU) and isinstance(vgg.features[-3], nn.Conv2d)
    assert resolve_target_layer(resnet, "last_conv") == (resnet.layer4[-1], "layer4.-1")
    assert resolve_target_layer(resnet, "layer3") == (resnet.layer3[-1], "layer3.-1")
    assert resolve_target_layer(resnet, "layer2") == (resnet.layer2[-1], "layer2.-1")
    assert resolve_target_layer(simple, "features.3") == (simple.features[3], "features.3")
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert resolve_target_layer(tiny, "1") == (tiny[1], "1")
    # No in-place ReLU anywhere in the three nets whose last_conv is a ReLU's output.
    for arch in ("vgg11", "simple", "simpler"):
        relus = [m for m in networks[arch].modules() if isinstance(m, nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)
    # last_conv is twice last_block's resolution except on ResNet18 (the same layer).
    for arch, network in networks.items():
        sizes = {
            preset: GradCAM(network, preset).low_res(torch.randn(1, 3, 64, 64))[0].shape[-1]
            for preset in ("last_block", "last_conv")
        }
        assert sizes["last_conv"] == sizes["last_block"] * (1 if arch == "resnet18" else 2), arch


def test_bad_layer_specs_and_names_are_rejected(networks) -> None:
    vgg, simple = networks["vgg11"], networks["simple"]
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(
        ValueError, match=r"'layer3' is not available here: vgg11 has \['last_block', 'last_conv'\]"
    ):
        resolve_target_layer(vgg, "layer3")
    with pytest.raises(ValueError, match="'last_cnv' is neither the presets for simple"):
        resolve_target_layer(simple, "last_cnv")
    with pytest.raises(
        ValueError, match="preset 'last_conv' is not available here: a network of type Sequential is none of"
    ):
        GradCAM(tiny, "last_conv")
    with pytest.raises(
        ValueError, match=r"'head' is neither a preset \(a network of type Sequential has none\)"
    ):
        resolve_target_layer(tiny, "head")
    with pytest.raises(ValueError, match="not a module"):
        resolve_target_layer(simple, "features.0.weight")
    with pytest.raises(
        ValueError, match=r"unknown method 'gradcam\+'; choose one of \['gradcam', 'hirescam'"
    ):
        build_explainer("gradcam+", simple, "last_block")
