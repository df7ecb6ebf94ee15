"""The CAM machinery (through Grad-CAM): parity with pytorch-grad-cam on the four architectures, state
hygiene, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from citylens.core.layers import resolve_target_layer
from citylens.explain import GradCAM, upsample_masks
from citylens.models import build_model

# Input sizes where the target map is not 1x1 yet the test stays fast: simple 4x4, simpler 8x8,
# resnet18 2x2 at 64 px; vgg11 3x3 at 96 px.
SIZES = {"simple": 64, "simpler": 64, "resnet18": 64, "vgg11": 96}
BATCH = 4


def _train_a_little(network: nn.Module, num_classes: int, size: int, steps: int = 2) -> None:
    """A few Adam steps on random data so the weights (and BatchNorm statistics) are not just the init."""
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3, foreach=False)
    network.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(
            network(torch.randn(BATCH, 3, size, size)), torch.randint(num_classes, (BATCH,))
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    optimiser.zero_grad(set_to_none=True)


def _reference(
    network: nn.Module, layer: nn.Module, images: torch.Tensor, targets: list[int] | None
) -> torch.Tensor:
    """pytorch-grad-cam's GradCAM masks for the same batch."""
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with ReferenceGradCAM(network, [layer]) as reference:
        wanted = None if targets is None else [ClassifierOutputTarget(t) for t in targets]
        return torch.from_numpy(reference(images, wanted))


# VGG11 (130M parameters, mostly its first linear layer) is slow to train even a little on a 2-core CPU:
# the default suite covers it with random weights and 3 classes and "trained" weights and 2 classes.
_SLOW_VGG = {("vgg11", False, 2), ("vgg11", True, 3)}
PARITY_CASES = [
    pytest.param(
        arch,
        trained,
        classes,
        id=f"{arch}-{'trained' if trained else 'random'}-{classes}",
        marks=[pytest.mark.slow] if (arch, trained, classes) in _SLOW_VGG else [],
    )
    for arch in SIZES
    for trained in (False, True)
    for classes in (2, 3)
]


@pytest.mark.parametrize(("arch", "trained", "num_classes"), PARITY_CASES)
def test_parity_with_pytorch_grad_cam(arch: str, trained: bool, num_classes: int) -> None:
    torch.manual_seed(0)
    size = SIZES[arch]
    network = build_model(arch, num_classes, input_size=size)
    layer = resolve_target_layer(network, "last_block")[0]
    if trained:
        _train_a_little(network, num_classes, size)
    images = torch.randn(BATCH, 3, size, size)
    targets = [num_classes - 1, 0, 1, 0]
    cam = GradCAM(network, layer)

    for given in (targets, None):
        masks = cam(images, given)
        expected = _reference(network, layer, images, given)
        assert masks.shape == (BATCH, size, size) and masks.dtype == torch.float32
        assert (masks - expected).abs().max().item() <= 1e-5
        assert masks.min().item() >= 0.0 and masks.max().item() <= 1.0


@pytest.fixture()
def simple_net() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    network = build_model("simple", 3, input_size=64)
    layer = resolve_target_layer(network, "last_block")[0]
    return network, layer, torch.randn(3, 3, 64, 64)


class TinyNet(nn.Module):
    """A small conv net whose last conv block's output can be detached, ignored or zeroed."""

    def __init__(self, mode: str = "normal") -> None:
        super().__init__()
        self.mode = mode
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.spare = nn.Conv2d(3, 6, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        if self.mode == "detached":
            a = a.detach()
        elif self.mode == "unused":
            a = self.spare(x)
        elif self.mode == "twice":
            a = self.features(x) + a
        return self.head(torch.relu_(a) if self.mode == "inplace" else torch.relu(a))


def test_low_res_then_upsample_is_bit_equal_and_logits_from_same_pass(simple_net) -> None:
    network, layer, images = simple_net
    cam = GradCAM(network, layer)
    low, logits = cam.low_res(images, [0, 1, 2])
    assert low.shape == (3, 4, 4) and low.dtype == torch.float32
    assert torch.equal(cam(images, [0, 1, 2]), upsample_masks(low, 64))
    masks, logits2 = cam.masks_and_logits(images, [0, 1, 2])
    assert torch.equal(masks, upsample_masks(low, (64, 64)))
    with torch.no_grad():
        assert torch.allclose(logits, network.eval()(images), atol=1e-6)
    assert torch.equal(logits, logits2) and not logits.requires_grad


def test_default_targets_are_argmax_and_targets_accept_tensors_and_arrays(simple_net) -> None:
    network, layer, images = simple_net
    cam = GradCAM(network, layer)
    _, logits = cam.low_res(images)
    argmax = logits.argmax(1)
    expected = cam(images, argmax.tolist())
    assert torch.equal(cam(images), expected)
    assert torch.equal(cam(images, argmax), expected)
    assert torch.equal(cam(images, argmax.numpy().astype(np.int32)), expected)


def test_all_zero_cam_gives_zero_masks_not_nan() -> None:
    torch.manual_seed(0)
    network = TinyNet()
    with torch.no_grad():
        network.features[2].weight.zero_()
        network.features[2].bias.zero_()
    masks = GradCAM(network, network.features[2])(torch.randn(2, 3, 16, 16))
    assert not torch.isnan(masks).any() and torch.equal(masks, torch.zeros(2, 16, 16))
    assert torch.equal(upsample_masks(torch.zeros(2, 3, 3), 9), torch.zeros(2, 9, 9))


def test_in_place_op_after_the_target_layer_is_harmless() -> None:
    torch.manual_seed(0)
    plain, in_place = TinyNet(), TinyNet("inplace")
    in_place.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 16, 16)
    expected = GradCAM(plain, plain.features[2])(images, [0, 2])
    assert torch.equal(GradCAM(in_place, in_place.features[2])(images, [0, 2]), expected)
    resnet = build_model("resnet18", 2, input_size=64)
    masks = GradCAM(resnet, resnet.layer4[-1].bn2)(torch.randn(2, 3, 64, 64))
    assert masks.shape == (2, 64, 64) and not torch.isnan(masks).any()


def test_state_restored_and_no_parameter_gradients(simple_net) -> None:
    network, layer, images = simple_net
    network.train()
    network.classifier.eval()
    network.features[0].weight.requires_grad_(False)
    modes = [m.training for m in network.modules()]
    flags = [p.requires_grad for p in network.parameters()]
    cam = GradCAM(network, layer)

    cam(images)
    assert [m.training for m in network.modules()] == modes
    assert [p.requires_grad for p in network.parameters()] == flags
    assert all(p.grad is None for p in network.parameters())
    assert not layer._forward_hooks

    for bad_call in (lambda: cam(images, [0, 1, 3]), lambda: cam(torch.randn(2, 4, 64, 64))):
        with pytest.raises((ValueError, RuntimeError)):
            bad_call()
        assert [m.training for m in network.modules()] == modes
        assert [p.requires_grad for p in network.parameters()] == flags
        assert not layer._forward_hooks


def test_works_inside_no_grad_and_inference_mode(simple_net) -> None:
    network, layer, images = simple_net
    cam = GradCAM(network, layer)
    expected = cam(images)
    with torch.no_grad():
        assert torch.equal(cam(images), expected)
    with torch.inference_mode():
        assert torch.equal(cam(images.clone()), expected)
    assert torch.equal(cam(images.clone().requires_grad_(True)), expected)


def test_autocast_bfloat16_runs_and_stays_close(simple_net) -> None:
    network, layer, images = simple_net
    masks = GradCAM(network, layer, autocast_dtype=torch.bfloat16)(images)
    assert masks.dtype == torch.float32 and masks.shape == (3, 64, 64)
    assert masks.min().item() >= 0.0 and masks.max().item() <= 1.0
    assert (masks - GradCAM(network, layer)(images)).abs().mean().item() < 0.1


def test_bad_layers_are_rejected() -> None:
    network = TinyNet()
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(network, TinyNet().features[2])
    images = torch.randn(2, 3, 16, 16)
    for mode in ("detached", "unused"):
        broken = TinyNet(mode)
        with pytest.raises(ValueError, match="no gradient path"):
            GradCAM(broken, broken.features[2])(images)
    with pytest.raises(ValueError, match="did not run"):
        GradCAM(network, network.spare)(images)
    twice = TinyNet("twice")
    with pytest.raises(ValueError, match="2 times"):
        GradCAM(twice, twice.features[2])(images)
    with pytest.raises(ValueError, match=r"\(N=2, K, h, w\)"):
        GradCAM(network, network.head[1])(images)


def test_bad_targets_and_images_are_rejected(simple_net) -> None:
    network, layer, images = simple_net
    cam = GradCAM(network, layer)
    with pytest.raises(ValueError, match="one class index per image"):
        cam(images, [0, 1])
    with pytest.raises(ValueError, match="one class index per image"):
        cam(images, 1)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cam(images, [0, 1, 3])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cam(images, [0, -1, 2])
    with pytest.raises(ValueError, match="integer"):
        cam(images, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cam(images[0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cam(images.to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        upsample_masks(torch.zeros(2, 1, 3, 3), 8)
