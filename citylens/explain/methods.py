"""The five CAM methods, each the few lines that differ, the captum attribution explainers
(citylens.explain.attribution) beside them, and `build_explainer` to choose one by name.

Each is pytorch-grad-cam 1.5.7's class of the same name for one target layer, no smoothing
(docs/explainers.md, "The methods"). A = the layer's activations, G = dS/dA, both (N, K, h, w) float32;
sums and means over "hw" run over the spatial dims of each image and channel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from citylens.explain.attribution import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    ObjectShapley,
    Occlusion,
    RenderedShapley,
    SmoothGrad,
)
from citylens.explain.cam import BaseCAM

# pytorch-grad-cam's constants: GradCAM++ adds 1e-6 to its alpha denominator, XGradCAM 1e-7 to sum_hw A.
PLUSPLUS_EPS = 1e-6
XGRAD_EPS = 1e-7
_HW = (2, 3)


class GradCAM(BaseCAM):
    """Grad-CAM: channel weights w[k] = mean_hw G[k]; cam = relu(sum_k w[k] A[k])."""

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean(dim=_HW, keepdim=True)


class HiResCAM(BaseCAM):
    """HiResCAM: cam = relu(sum_k G[k] * A[k]), the gradient kept per position instead of averaged."""

    def cam_image(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * activations).sum(dim=1)


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: w[k] = sum_hw relu(G) * a, a = G^2 / (2 G^2 + sum_hw(A) G^3 + 1e-6), 0 where G = 0."""

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        grads_2 = grads**2
        grads_3 = grads_2 * grads
        sum_activations = activations.sum(dim=_HW, keepdim=True)
        alpha = grads_2 / (2 * grads_2 + sum_activations * grads_3 + PLUSPLUS_EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp_min(0) * alpha).sum(dim=_HW, keepdim=True)


class XGradCAM(BaseCAM):
    """XGrad-CAM: w[k] = sum_hw G[k] * A[k] / (sum_hw A[k] + 1e-7); cam = relu(sum_k w[k] A[k])."""

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        sum_activations = activations.sum(dim=_HW, keepdim=True)
        return (grads * activations / (sum_activations + XGRAD_EPS)).sum(dim=_HW, keepdim=True)


class LayerCAM(BaseCAM):
    """LayerCAM: cam = relu(sum_k relu(G[k]) * A[k]), only positive gradients, kept per position."""

    def cam_image(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads.clamp_min(0) * activations).sum(dim=1)


# The CAM family (a map of one layer, pytorch-grad-cam's semantics) and captum's attributions (of the input).
CAMS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
}
ATTRIBUTIONS: dict[str, type[Attribution]] = {
    "ig": IntegratedGradients,
    "ixg": InputXGradient,
    "smoothgrad": SmoothGrad,
    "occlusion": Occlusion,
    "shapley": ObjectShapley,
    "shapley_rendered": RenderedShapley,
}
EXPLAINERS: dict[str, type[BaseCAM] | type[Attribution]] = {**CAMS, **ATTRIBUTIONS}


def explainer_name(name_or_class_path: str) -> str:
    """The registered name of an explainer given by name or by the class path its config names as `_target_`
    (`citylens.explain.LayerCAM`); only registered classes are accepted, nothing is imported."""
    if name_or_class_path in EXPLAINERS:
        return name_or_class_path
    for name, cls in EXPLAINERS.items():
        if name_or_class_path in (f"{cls.__module__}.{cls.__name__}", f"citylens.explain.{cls.__name__}"):
            return name
    raise ValueError(f"explainer: unknown method {name_or_class_path!r}; choose one of {list(EXPLAINERS)}")


def is_attribution(name: str) -> bool:
    """Is the explainer a captum attribution (signed map of the input) rather than a CAM of a layer?"""
    return issubclass(EXPLAINERS[explainer_name(name)], Attribution)


def check_explainer_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The explainer's options with defaults filled in (none for a CAM); ValueError naming the bad key."""
    cls = EXPLAINERS[explainer_name(name)]
    if issubclass(cls, Attribution):
        return cls.check_options(options)
    if options:
        raise ValueError(f"explainer.options: {name} takes no options, got {sorted(options)}")
    return {}


def build_explainer(
    name: str,
    network: nn.Module,
    layer: nn.Module | str = "last_block",
    autocast_dtype: torch.dtype | None = None,
    options: dict[str, Any] | None = None,
    internal_batch_size: int = 64,
) -> BaseCAM | Attribution:
    """The explainer `name` (a key of EXPLAINERS) of `network` at `layer` (module, preset or dotted path;
    `input` for an attribution explainer), with its `options` and, for an attribution explainer, at most
    `internal_batch_size` inputs per forward pass."""
    cls = EXPLAINERS[explainer_name(name)]
    if issubclass(cls, Attribution):
        return cls(network, layer, autocast_dtype, internal_batch_size, options)
    check_explainer_options(name, options)
    return cls(network, layer, autocast_dtype=autocast_dtype)
