"""The explainer layer presets per architecture, the architecture of a network, and the lookup of a target
layer by preset or dotted path.

In the core layer so the explainers (citylens.explain) and the model builder (citylens.models) share them
without importing each other (docs/explainers.md, "Layers"). A network brings its presets with it: its
architecture is read from its type (`arch_of`), so no caller passes an architecture name alongside it.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import VGG, ResNet
from torchvision.models.resnet import BasicBlock

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

# torchvision's VGG11 feature stack (configuration "A", no batch norm): each number a conv-ReLU pair of that
# width, each "M" a max-pool.
VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG11_FEATURES: tuple[type[nn.Module], ...] = tuple(
    kind for v in VGG11_CONFIG for kind in ((nn.MaxPool2d,) if v == "M" else (nn.Conv2d, nn.ReLU))
)
RESNET18_BLOCKS = (2, 2, 2, 2)


def arch_of(network: nn.Module) -> str | None:
    """The architecture of `network` among ARCHITECTURES, from its type; None for any other network.

    The project's own networks name theirs in a class attribute `arch` (citylens.models.networks); a
    torchvision VGG counts as vgg11 only with VGG11's feature stack, a torchvision ResNet as resnet18 only
    with ResNet18's basic blocks (2, 2, 2, 2), so a network whose presets would point elsewhere gets none.
    """
    named = getattr(type(network), "arch", None)
    if isinstance(named, str) and named in LAYER_PRESETS:
        return named
    if isinstance(network, VGG) and tuple(type(m) for m in network.features) == VGG11_FEATURES:
        return "vgg11"
    if isinstance(network, ResNet):
        stages = [getattr(network, f"layer{i}") for i in range(1, 5)]
        if tuple(len(s) for s in stages) == RESNET18_BLOCKS and all(
            isinstance(block, BasicBlock) for stage in stages for block in stage
        ):
            return "resnet18"
    return None


def layer_presets(network: nn.Module) -> dict[str, str]:
    """The layer presets (name -> dotted path) of `network`'s architecture; empty for an unknown network."""
    arch = arch_of(network)
    return dict(LAYER_PRESETS[arch]) if arch is not None else {}


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


def resolve_target_layer(network: nn.Module, spec: str) -> tuple[nn.Module, str]:
    """The target layer named by `spec` (a preset of the network's architecture or a dotted path), its path.

    Presets come with the network (`arch_of`); a dotted path works on any network. A preset of another
    architecture (`layer3` on VGG11) is refused with the presets valid for this network.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"explainer.layer: expected a preset or a dotted path, got {spec!r}")
    arch = arch_of(network)
    presets = layer_presets(network)
    if spec in presets:
        return resolve_layer(network, presets[spec]), presets[spec]
    if arch is not None:
        where, known = f"{arch} has {list(presets)}", f"the presets for {arch}: {list(presets)}"
    else:
        kind = f"a network of type {type(network).__name__}"
        where = f"{kind} is none of {list(ARCHITECTURES)}, so it has no presets"
        known = f"a preset ({kind} has none)"
    if spec in PRESET_NAMES:
        raise ValueError(f"explainer.layer: preset {spec!r} is not available here: {where}")
    try:
        return resolve_layer(network, spec), spec
    except ValueError as err:
        raise ValueError(
            f"explainer.layer: {spec!r} is neither {known} nor a dotted path into the network ({err})"
        ) from err
