"""The explainer layer presets per architecture and the lookup of a target layer by preset or dotted path.

In the core layer so the explainers (citylens.explain) and the model builder (citylens.models) share them
without importing each other (docs/explainers.md, "Layers").
"""

from __future__ import annotations

from torch import nn

ARCHITECTURES = ("vgg11", "resnet18", "simple", "simpler")

# The layer presets per architecture (docs/explainers.md, "Layers"), as dotted paths for resolve_layer.
# last_block: the peers' target layer, the output of the last conv block (for VGG11 and the paper's
# shallow nets the last max-pool, for ResNet18 the last basic block). last_conv: the output of the last
# convolution's ReLU, before the last pooling (twice last_block's resolution for VGG11/Simple/Simpler; for
# ResNet18 the same module as last_block, whose final ReLU has no pooling after it). layer3/layer2: the
# output of that ResNet18 stage's last basic block.
LAYER_PRESETS: dict[str, dict[str, str]] = {
    "vgg11": {"last_block": "features.-1", "last_conv": "features.-2"},
    "resnet18": {
        "last_block": "layer4.-1",
        "last_conv": "layer4.-1",
        "layer3": "layer3.-1",
        "layer2": "layer2.-1",
    },
    "simple": {"last_block": "features.-1", "last_conv": "features.-2"},
    "simpler": {"last_block": "features.-1", "last_conv": "features.-2"},
}
DEFAULT_TARGET_LAYERS = {arch: presets["last_block"] for arch, presets in LAYER_PRESETS.items()}
PRESET_NAMES = tuple(dict.fromkeys(name for presets in LAYER_PRESETS.values() for name in presets))


def resolve_layer(network: nn.Module, path: str) -> nn.Module:
    """Follow a dotted path such as 'features.-1' or 'layer4.1.conv2' (integers index Sequentials)."""
    module: nn.Module = network
    for part in path.split("."):
        try:
            module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
        except (AttributeError, IndexError, TypeError) as err:
            raise ValueError(f"target layer {path!r}: {type(module).__name__} has no part {part!r}") from err
    if not isinstance(module, nn.Module):
        raise ValueError(f"target layer {path!r}: {type(module).__name__} is not a module")
    return module


def resolve_target_layer(network: nn.Module, arch: str | None, spec: str) -> tuple[nn.Module, str]:
    """The target layer named by `spec` (a preset of LAYER_PRESETS[arch] or a dotted path) and its path.

    Presets need `arch`; a dotted path works on any network. A preset of another architecture
    (`layer3` on VGG11) is refused with the presets valid for `arch`.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"explainer.layer: expected a preset or a dotted path, got {spec!r}")
    presets = LAYER_PRESETS.get(arch, {}) if arch is not None else {}
    if arch is not None and arch not in LAYER_PRESETS:
        raise ValueError(
            f"explainer.layer: unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}"
        )
    if spec in presets:
        return resolve_layer(network, presets[spec]), presets[spec]
    if spec in PRESET_NAMES:
        where = f"{arch} has {list(presets)}" if arch is not None else "presets need the architecture (arch)"
        raise ValueError(f"explainer.layer: preset {spec!r} is not available here: {where}")
    try:
        return resolve_layer(network, spec), spec
    except ValueError as err:
        known = f"the presets for {arch}: {list(presets)}" if arch is not None else "a preset (give arch)"
        raise ValueError(
            f"explainer.layer: {spec!r} is neither {known} nor a dotted path into the network ({err})"
        ) from err
