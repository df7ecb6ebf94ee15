"""The shared flow of every CAM method, batched, with pytorch-grad-cam 1.5.7's semantics for one layer.

`BaseCAM` holds what the methods share (docs/explainers.md, "The shared flow"):
1. eval mode, one forward pass; A = the target layer's output as the forward pass produced it;
2. S = sum over the batch of each image's target logit (raw), G = dS/dA;
3. cam = relu(method(A, G)), the one step a method overrides (`cam_image`, or `channel_weights`
   for the methods that weight whole channels);
4. per-image min-max: (cam - min) / (1e-7 + max of that)    -> `BaseCAM.low_res`;
5. half-pixel bilinear resize to the input size (cv2 INTER_LINEAR == F.interpolate, align_corners=False);
6. relu, then the same min-max again                          -> `upsample_masks`.

Unlike the reference library it differentiates only the layers after the target layer (a forward hook
swaps the layer's output for a detached leaf and parameter gradients are switched off for the call),
keeps everything on the images' device and has no per-image Python loop, so it costs about one forward
pass (docs/explainers.md, "Why batched and cheap").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from citylens.core.layers import resolve_target_layer

# pytorch_grad_cam.utils.image.scale_cam_image: img = img - min(img); img = img / (1e-7 + max(img)).
EPS = 1e-7

Targets = Sequence[int] | np.ndarray | torch.Tensor | None


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to [0, 1] over the last two dims, epsilon placed as pytorch-grad-cam places it.

    An all-zero (or constant) map becomes all zeros, never NaN.
    """
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (EPS + maps.amax(dim=(-2, -1), keepdim=True))


def upsample_masks(low_res: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Steps 5-6: resize (N, h, w) normalised cams to (N, H, W) masks in [0, 1], float32.

    A pure function, so a mask store can keep the small maps and rebuild the full-resolution masks
    bit for bit: `cam(images)` is exactly `upsample_masks(cam.low_res(images)[0], H)` for every method.
    """
    if low_res.ndim != 3:
        raise ValueError(f"low_res must be (N, h, w), got shape {tuple(low_res.shape)}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    maps = F.interpolate(
        low_res[:, None].float(), size=size, mode="bilinear", align_corners=False, antialias=False
    )[:, 0]
    return _normalise(maps.clamp_min(0))


@contextlib.contextmanager
def _frozen_eval(network: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; every module's mode and every
    parameter's requires_grad flag are restored afterwards, also when an exception occurs."""
    modes = [(module, module.training) for module in network.modules()]
    flags = [(param, param.requires_grad) for param in network.parameters()]
    try:
        network.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


def _target_indices(targets: Targets, n: int) -> torch.Tensor | None:
    """Check the per-image target classes (one integer per image) before the forward pass."""
    if targets is None:
        return None
    t = torch.as_tensor(targets)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"targets must be integer class indices, got dtype {t.dtype}")
    if t.ndim != 1 or t.numel() != n:
        raise ValueError(
            f"targets must hold one class index per image ({n}), got shape {tuple(t.shape)}; "
            "a single target for a whole batch is not accepted (it would silently explain image 0 only)"
        )
    return t


class BaseCAM:
    """A CAM method of `network` at one layer, batched: `cam(images, targets) -> (N, H, W)` masks.

    `layer` is the target module itself, or a string: a preset of the network's architecture (`last_block`,
    `last_conv`, ...) or a dotted path, resolved by `citylens.core.layers.resolve_target_layer`
    (docs/explainers.md, "Layers"). `layer_path` keeps the dotted path (None when a module was given).
    Subclasses override `cam_image` (the map from A and G, before the relu), or `channel_weights`
    when the map is a weighted sum of A's channels.
    `autocast_dtype` (e.g. torch.bfloat16) runs the forward pass under autocast: faster on GPUs, but
    the masks are then not bit-equal to fp32 nor within 1e-5 of pytorch-grad-cam. On CUDA, TF32
    matmuls (if the caller enables them) likewise break fp32 parity.
    No hooks outlive a call: the forward hook is registered and removed inside each call.
    """

    def __init__(
        self,
        network: nn.Module,
        layer: nn.Module | str = "last_block",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(layer, str):
            layer, self.layer_path = resolve_target_layer(network, layer)
        else:
            self.layer_path = None
        if not any(module is layer for module in network.modules()):
            raise ValueError(
                f"target layer {type(layer).__name__} is not a submodule of the network "
                f"{type(network).__name__}"
            )
        self.network = network
        self.target_layer = layer
        self.autocast_dtype = autocast_dtype

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """(N, K, 1, 1) weights of A's channels, for the methods whose map is sum_k w[k] * A[k]."""
        raise NotImplementedError(f"{type(self).__name__} must override channel_weights or cam_image")

    def cam_image(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Step 3 before its relu: the (N, h, w) map from A and G (N, K, h, w), float32."""
        return (self.channel_weights(activations, grads) * activations).sum(dim=1)

    def __call__(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Masks (N, H, W) float32 in [0, 1] on the images' device; targets default to each argmax."""
        return self.masks_and_logits(images, targets)[0]

    def masks_and_logits(
        self, images: torch.Tensor, targets: Targets = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks as `__call__` gives them, plus the (N, C) float32 logits of the same forward pass."""
        cams, logits = self.low_res(images, targets)
        return upsample_masks(cams, tuple(images.shape[-2:])), logits

    def low_res(self, images: torch.Tensor, targets: Targets = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-4: the normalised cams at the target layer's resolution (N, h, w) and the logits (N, C).

        Softmax of the logits gives the predicted probabilities without a second forward pass.
        """
        activations, grads, logits = self.activations_and_grads(images, targets)
        cams = self.cam_image(activations.detach().float(), grads.float()).clamp_min(0)
        return _normalise(cams), logits

    def activations_and_grads(
        self, images: torch.Tensor, targets: Targets = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-2: A (N, K, h, w), G = dS/dA of the same shape, and the detached float32 logits."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
        n = images.shape[0]
        target_idx = _target_indices(targets, n)
        captured: list[torch.Tensor] = []

        def swap_for_leaf(module: nn.Module, inputs: object, output: object) -> torch.Tensor:
            # The layer's output becomes a leaf: autograd records only the layers after it. The network
            # goes on with a clone, so an in-place op after the layer (ResNet's `out += identity`)
            # neither fails on the leaf nor alters the activation the cam reads (docs/explainers.md).
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"target layer output must be a tensor, got {type(output).__name__}")
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf.clone()

        autocast = (
            torch.autocast(images.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with _frozen_eval(self.network), torch.inference_mode(False), torch.enable_grad():
            handle = self.target_layer.register_forward_hook(swap_for_leaf)
            try:
                with autocast:
                    logits = self.network(images.detach())
            finally:
                handle.remove()
            activations = self._check_activations(captured, n)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n:
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"network output must be logits (N={n}, C), got {shape}")
            if target_idx is None:
                target_idx = logits.argmax(dim=1)
            else:
                target_idx = self._check_range(target_idx, logits.shape[1]).to(logits.device)
            if not logits.requires_grad:
                raise ValueError(self._no_path_message())
            scores = logits.gather(1, target_idx[:, None]).sum()
            (grads,) = torch.autograd.grad(scores, activations, allow_unused=True)
        if grads is None:
            raise ValueError(self._no_path_message())
        return activations.detach(), grads, logits.detach().float()

    def _check_activations(self, captured: list[torch.Tensor], n: int) -> torch.Tensor:
        """The target layer must have run exactly once and produced an (N, K, h, w) tensor."""
        if not captured:
            raise ValueError("target layer did not run in the network's forward pass")
        if len(captured) > 1:
            raise ValueError(
                f"target layer ran {len(captured)} times in one forward pass; a CAM needs a layer that "
                "runs once"
            )
        activations = captured[0]
        if activations.ndim != 4 or activations.shape[0] != n:
            raise ValueError(
                f"target layer output must be (N={n}, K, h, w), got shape {tuple(activations.shape)}"
            )
        return activations

    @staticmethod
    def _check_range(target_idx: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Targets must lie in [0, num_classes); one host sync when they live on an accelerator."""
        bad = (target_idx < 0) | (target_idx >= num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"targets must lie in [0, {num_classes}), got {target_idx[bad].unique().tolist()}"
            )
        return target_idx.long()

    def _no_path_message(self) -> str:
        return (
            f"target layer {type(self.target_layer).__name__} has no gradient path to the network's "
            "output (its output is unused or detached); pick a layer whose output the logits depend on"
        )
