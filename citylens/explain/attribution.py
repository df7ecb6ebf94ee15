"""Attribution explainers from captum: signed per-pixel maps and per-object values (docs/explainers.md).

Pixel explainers (`IntegratedGradients`, `InputXGradient`, `SmoothGrad` = captum's NoiseTunnel over either)
explain the log-probability of the target class; their map is the captum attribution summed over the colour
channels, signed, at the input's resolution. Object explainers (`Occlusion` = captum's FeatureAblation,
`ObjectShapley` = captum's ShapleyValueSampling) perturb whole objects through the label map given as
captum's `feature_mask`; their map holds each object's value on every pixel of the object. `RenderedShapley`
(synthetic data) values the objects over coalitions the generator renders instead of filling pixels.

Every explainer has the CAM family's interface: `low_res(images, targets) -> (maps, logits)` (here the maps
are the signed full-resolution maps a mask store keeps) and `__call__(images, targets) -> masks`, the
positive part of the map min-max normalised to [0, 1] by `upsample_masks`, which is what the object ratios
R_p^c, the figures and the residuals read. `object_statistic` says how a map becomes one value per object:
the sum over the object's pixels (pixel explainers) or their mean (object explainers: the object's value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from citylens.core.ade20k import class_index
from citylens.core.view import MEAN, STD, surround_fill
from citylens.explain.cam import Targets, _frozen_eval, _target_indices, upsample_masks

# The layer an attribution explainer names: it explains the network's input, not a hidden layer.
INPUT_LAYER = "input"
BASELINES = ("mean", "black", "blur", "empty")
FILLS = ("mean", "blur", "surround")
OptTensor = Tensor | None


def captum_attr() -> Any:
    """captum.attr, imported on first use: it loads matplotlib.pyplot, which a light import must not."""
    import captum.attr

    return captum.attr


def fill_images(
    images: torch.Tensor, fill: str, blur_sigma: float = 0.1, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised network inputs (N, 3, H, W) -> the same images filled as the causal step's deletion fills
    an object: each image's mean colour (`mean`), the image under a Gaussian blur of `blur_sigma` times
    its side (`blur`, scipy's reflecting filter as deletion uses), or each object of the (N, H, W) `labels`
    filled from the pixels around it (`surround`, core.view.surround_fill at sigma = `blur_sigma` x side;
    objects partition the image, so one filled image serves every object), without rounding."""
    if fill == "surround":
        if labels is None:
            raise ValueError("fill 'surround' needs the images' label maps")
        sigma = blur_sigma * max(images.shape[-2:])
        x = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        lab = labels.cpu().numpy()
        out = np.empty_like(x)
        for i in range(len(x)):
            masks = lab[i][None] == np.unique(lab[i])[:, None, None]
            out[i] = (surround_fill(x[i], masks, sigma) * masks[..., None]).sum(0)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, images.dtype)
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    sigma = blur_sigma * max(images.shape[-2:])
    blurred = ndimage.gaussian_filter(
        images.detach().float().cpu().numpy(), (0, 0, sigma, sigma), mode="reflect"
    )
    return torch.from_numpy(blurred).to(images.device, images.dtype)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"explainer.options.{key}: {value!r} is not one of {list(choices)}")
    return str(value)


def _check_int(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"explainer.options.{key}: expected an integer >= {low}, got {value!r}")
    return value


def _check_positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"explainer.options.{key}: expected a positive number, got {value!r}")
    return float(value)


class Attribution:
    """What every captum explainer shares: options, eval mode, targets, log-softmax output, the map.

    Options (`explainer.options` in the config) are the class's OPTIONS with their defaults; unknown keys
    and bad values raise ValueError naming the key. `internal_batch_size` bounds the inputs of one forward
    pass (the explain step's batch size).
    """

    OPTIONS: ClassVar[dict[str, Any]] = {}
    needs_labels: ClassVar[bool] = False
    object_statistic: ClassVar[str] = "sum"

    def __init__(
        self,
        network: nn.Module,
        layer: nn.Module | str = INPUT_LAYER,
        autocast_dtype: torch.dtype | None = None,
        internal_batch_size: int = 64,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(layer, str) and layer != INPUT_LAYER:
            raise ValueError(
                f"explainer.layer: {type(self).__name__} explains the network's input; set it to "
                f"{INPUT_LAYER!r}, got {layer!r}"
            )
        if autocast_dtype is not None:
            raise ValueError(f"{type(self).__name__}: autocast is not supported (attributions need fp32)")
        self.network = network
        self.options = self.check_options(options)
        self.internal_batch_size = _check_int("internal_batch_size", internal_batch_size, 1)

    @classmethod
    def check_options(cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The options with defaults filled in, each checked; ValueError names the key at fault."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            raise ValueError(
                f"explainer.options: unknown key(s) {unknown} for {cls.__name__}; "
                f"it takes {list(cls.OPTIONS)}"
            )
        merged = {**cls.OPTIONS, **options}
        checks: dict[str, Callable[[str, Any], Any]] = {
            "baseline": lambda k, v: _check_choice(k, v, BASELINES),
            "fill": lambda k, v: _check_choice(k, v, FILLS),
            "method": lambda k, v: _check_choice(k, v, ("ig", "ixg")),
            "n_steps": lambda k, v: _check_int(k, v, 1),
            "n_samples": lambda k, v: _check_int(k, v, 1),
            "max_exact": lambda k, v: _check_int(k, v, 0),
            "nt_samples": lambda k, v: _check_int(k, v, 1),
            "seed": lambda k, v: _check_int(k, v, 0),
            "blur_sigma": _check_positive,
            "stdev": _check_positive,
        }
        return {k: checks[k](k, v) for k, v in merged.items()}

    @property
    def needs_empty(self) -> bool:
        """Does it need the synthetic generator's empty scenes as `baselines`?"""
        return self.options.get("baseline") == "empty"

    def log_probs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The function explained: log-probabilities (N, C) of the classes."""
        return self.network(inputs).float().log_softmax(dim=1)

    def baselines(
        self, images: torch.Tensor, given: torch.Tensor | None, labels: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The reference inputs of the attribution (None: the method needs none)."""
        choice = self.options.get("baseline") or self.options.get("fill")
        if choice is None:
            return None
        if choice == "empty":
            if given is None or given.shape != images.shape:
                raise ValueError(
                    "baseline 'empty': pass the empty scenes' inputs as baselines=, one per image"
                )
            return given.to(images.device, images.dtype)
        if choice == "black":
            return (-MEAN / STD).to(images.device, images.dtype).expand_as(images).clone()
        if choice == "mean" and "baseline" in self.options:
            return torch.zeros_like(images)
        return fill_images(images, choice, self.options["blur_sigma"], labels)

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        """captum's attributions (N, 3, H, W) of the target classes' log-probabilities."""
        raise NotImplementedError(f"{type(self).__name__} must override attribute")

    def to_map(self, attributions: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) attributions -> the (N, H, W) signed map: summed over the colour channels."""
        return attributions.sum(dim=1)

    def low_res(
        self,
        images: torch.Tensor,
        targets: Targets = None,
        baselines: torch.Tensor | None = None,
        labels: torch.Tensor | np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The signed maps (N, H, W) float32 and the logits (N, C) float32; targets default to each argmax.

        `labels` (N, H, W) integer label maps (object explainers), `baselines` (N, 3, H, W) the empty scenes
        (integrated gradients with baseline `empty`)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor (N, C, H, W), got {shape}")
        target_idx = _target_indices(targets, images.shape[0])
        with _frozen_eval(self.network), torch.inference_mode(False):
            with torch.no_grad():
                logits = self.network(images.detach()).float()
            if target_idx is None:
                target_idx = logits.argmax(dim=1)
            elif bool(((target_idx < 0) | (target_idx >= logits.shape[1])).any()):
                raise ValueError(f"targets must lie in [0, {logits.shape[1]}), got {target_idx.tolist()}")
            if self.needs_labels:
                labels = self._check_labels(labels, images)
            with torch.enable_grad():
                attributions = self.attribute(
                    images.detach(),
                    target_idx.long().to(images.device),
                    self.baselines(images, baselines, labels),
                    labels,
                )
        return self.to_map(attributions.detach().float()), logits

    def __call__(self, images: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Masks (N, H, W) in [0, 1]: the map's positive part, min-max normalised per image."""
        return upsample_masks(self.low_res(images, targets)[0], tuple(images.shape[-2:]))

    @staticmethod
    def _check_labels(labels: torch.Tensor | np.ndarray | None, images: torch.Tensor) -> torch.Tensor:
        if labels is None:
            raise ValueError("an object explainer needs the images' label maps (labels=)")
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        expected = (images.shape[0], *images.shape[-2:])
        if tuple(labels.shape) != expected or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer label maps {expected}, got {labels.dtype} {tuple(labels.shape)}"
            )
        return labels.to(images.device)


class IntegratedGradients(Attribution):
    """Integrated gradients (captum): the path integral from the baseline to the image, `n_steps` steps.

    baseline: `mean` (the zero network input = the mean colour), `black`, `blur` (the image blurred by
    `blur_sigma` x its side) or `empty` (the generator's scene without its removable objects)."""

    OPTIONS: ClassVar[dict[str, Any]] = {"baseline": "mean", "n_steps": 16, "blur_sigma": 0.1}

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        return (
            captum_attr()
            .IntegratedGradients(self.log_probs)
            .attribute(
                images,
                baselines=baselines,
                target=targets,
                n_steps=self.options["n_steps"],
                internal_batch_size=self.internal_batch_size,
            )
        )


class InputXGradient(Attribution):
    """Input x gradient (captum): each input value times the gradient of the target's log-probability."""

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        return (
            captum_attr()
            .InputXGradient(self.log_probs)
            .attribute(images.requires_grad_(True), target=targets)
        )


class SmoothGrad(Attribution):
    """SmoothGrad (captum's NoiseTunnel, smoothgrad): the mean attribution of `method` (`ixg` or `ig`, with
    IG's baseline and n_steps) over `nt_samples` copies of the image with Gaussian noise of std `stdev`
    (in normalised input units), drawn from a generator seeded with `seed`."""

    OPTIONS: ClassVar[dict[str, Any]] = {
        "method": "ixg",
        "nt_samples": 8,
        "stdev": 0.15,
        "seed": 0,
        "baseline": "mean",
        "n_steps": 16,
        "blur_sigma": 0.1,
    }

    @property
    def needs_empty(self) -> bool:
        return self.options["method"] == "ig" and super().needs_empty

    def baselines(
        self, images: torch.Tensor, given: torch.Tensor | None, labels: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        return super().baselines(images, given, labels) if self.options["method"] == "ig" else None

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        o = self.options
        if o["method"] == "ig":
            inner: Any = captum_attr().IntegratedGradients(self.log_probs)
            extra = {
                "baselines": baselines,
                "n_steps": o["n_steps"],
                "internal_batch_size": self.internal_batch_size,
            }
        else:
            inner, extra = captum_attr().InputXGradient(self.log_probs), {}
        with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
            torch.manual_seed(o["seed"])
            return (
                captum_attr()
                .NoiseTunnel(inner)
                .attribute(
                    images,
                    nt_type="smoothgrad",
                    nt_samples=o["nt_samples"],
                    nt_samples_batch_size=max(1, self.internal_batch_size // len(images)),
                    stdevs=o["stdev"],
                    target=targets,
                    **extra,
                )
            )


def compact_mask(labels: torch.Tensor) -> torch.Tensor:
    """Label maps (N, H, W) -> captum's feature_mask (N, 1, H, W): each image's label values renumbered
    0..K_i-1 on their own. captum perturbs feature k in every image of the batch at once, so it makes
    max_i K_i passes instead of one per ADE20K index up to the largest (or per class anywhere in the batch);
    an image with fewer objects is left as it is in the passes beyond its own."""
    mask = torch.empty(labels.shape, dtype=torch.long, device=labels.device)
    for i, image_labels in enumerate(labels):
        _, mask[i] = torch.unique(image_labels, return_inverse=True)
    return mask[:, None]


class Occlusion(Attribution):
    """Occlusion of whole objects (captum's FeatureAblation, the label map as feature_mask): an object's
    value is log P(target | image) - log P(target | image with the object filled), the fill as the causal
    step's deletion fills: `surround` (the colours around the object, core.view.surround_fill; the default,
    docs/results.md), the `mean` colour of the image or `blur` (Gaussian of `blur_sigma` x the image side)."""

    OPTIONS: ClassVar[dict[str, Any]] = {"fill": "surround", "blur_sigma": 0.1}
    needs_labels: ClassVar[bool] = True
    object_statistic: ClassVar[str] = "mean"

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        return (
            captum_attr()
            .FeatureAblation(self.log_probs)
            .attribute(images, baselines=baselines, target=targets, feature_mask=compact_mask(labels))
        )

    def to_map(self, attributions: torch.Tensor) -> torch.Tensor:
        """Every channel of an object's pixels holds the object's value: the map is one channel of it."""
        return attributions[:, 0]


class ObjectShapley(Occlusion):
    """Shapley values of the objects (captum's ShapleyValueSampling over `n_samples` random orders, seeded
    with `seed`, the label map as feature_mask): an object's mean marginal effect on log P(target) when it is
    filled, over coalitions of the other objects of the image, filled as Occlusion fills. Opt-in: it costs
    n_samples x (objects in the batch + 1) forward passes of the batch."""

    OPTIONS: ClassVar[dict[str, Any]] = {"fill": "mean", "blur_sigma": 0.1, "n_samples": 16, "seed": 0}

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
            torch.manual_seed(self.options["seed"])
            return (
                captum_attr()
                .ShapleyValueSampling(self.log_probs)
                .attribute(
                    images,
                    baselines=baselines,
                    target=targets,
                    feature_mask=compact_mask(labels),
                    n_samples=self.options["n_samples"],
                )
            )


class SceneRenderer(Protocol):
    """A batch of synthetic images as the generator can draw them again (what `RenderedShapley` reads)."""

    def objects(self) -> list[tuple[str, ...]]:
        """Per image of the batch, the removable objects (ADE20K class names) its scene contains."""
        ...

    def render(self, removals: Sequence[Sequence[frozenset[str]]]) -> list[torch.Tensor]:
        """Per image, the network inputs (K, 3, H, W) of its scene drawn without each of its K removal
        sets."""
        ...


def coalition_bits(k: int) -> torch.Tensor:
    """All 2^k coalitions of k players as presence bits (2^k, k) int64: row c holds the bits of c (bit j set:
    player j is in the coalition), so the table of a game is indexed by `bits @ 2^j`."""
    return (torch.arange(2**k)[:, None] >> torch.arange(k)) & 1


def exact_shapley(values: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values (k,) float64 of the game `values` (2^k,), value of every coalition indexed by its
    presence bits (`coalition_bits`): phi_j = sum over S without j of |S|! (k-|S|-1)! / k! (v(S+j) - v(S)).

    Over the 2^k subsets, not the k! orders captum's ShapleyValues enumerates (the same numbers; 0.22 s of
    Python per image at k = 6 and 1.7 s at k = 7 there, microseconds here)."""
    k = int(round(math.log2(values.numel())))
    if 2**k != values.numel():
        raise ValueError(f"values: expected 2^k coalition values, got {values.numel()}")
    values = values.double()
    bits = coalition_bits(k)
    size = bits.sum(1)
    weight = torch.tensor([math.factorial(s) * math.factorial(max(k - s - 1, 0)) for s in range(k + 1)])
    weight = weight.double()[size] / math.factorial(k)
    codes = torch.arange(2**k)
    phi = torch.empty(k, dtype=torch.float64)
    for j in range(k):
        without = codes[bits[:, j] == 0]
        phi[j] = (weight[without] * (values[without | (1 << j)] - values[without])).sum()
    return phi


class RenderedShapley(Attribution):
    """Shapley values of the objects over coalitions the synthetic generator renders (synthetic data only).

    The players of an image are the removable objects its scene contains. A coalition S is worth log P(target)
    of the scene drawn without the objects not in S (the whole coalition: the image itself), so each object's
    value splits log P(target | image) - log P(target | empty scene) over the objects, with real
    counterfactual scenes instead of mean or blur fills. Images with at most `max_exact` objects: exact, from
    all 2^k rendered coalitions; more: captum's ShapleyValueSampling over the presence bits (`n_samples`
    orders, seeded with `seed`), rendering the coalitions its orders visit (collected by a first pass with the
    same seed). The map holds each object's value on its pixels of the label map, 0 elsewhere. Opt-in: up to
    2^k renders and forward passes per image (`scenes=` a SceneRenderer for the batch)."""

    OPTIONS: ClassVar[dict[str, Any]] = {"max_exact": 8, "n_samples": 16, "seed": 0}
    needs_labels: ClassVar[bool] = True
    needs_scenes: ClassVar[bool] = True
    object_statistic: ClassVar[str] = "mean"

    def low_res(
        self, *args: Any, scenes: SceneRenderer | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attribution.low_res(images, targets, baselines, labels) with `scenes` the generator's scenes of the
        batch (required)."""
        if scenes is None:
            raise ValueError(
                f"{type(self).__name__}: needs the synthetic generator's scenes of the images (scenes=)"
            )
        self._scenes = scenes
        try:
            return super().low_res(*args, **kwargs)
        finally:
            del self._scenes

    def attribute(self, images: Tensor, targets: Tensor, baselines: OptTensor, labels: OptTensor) -> Tensor:
        objects = self._scenes.objects()
        values = self.object_values(images, targets, self._scenes)
        maps = torch.zeros((images.shape[0], 1, *images.shape[-2:]), device=images.device)
        for i, (names, phi) in enumerate(zip(objects, values)):
            for name, value in zip(names, phi.tolist()):
                maps[i, 0][labels[i] == class_index(name)] = value
        return maps

    def to_map(self, attributions: torch.Tensor) -> torch.Tensor:
        return attributions[:, 0]

    def coalitions(self, k: int) -> torch.Tensor:
        """The coalition codes (presence bits as integers) whose values the Shapley values of k objects read:
        all 2^k when k <= max_exact, else those visited by the sampled orders."""
        if k <= self.options["max_exact"]:
            return torch.arange(2**k)
        seen: list[torch.Tensor] = []

        def record(presence: torch.Tensor) -> torch.Tensor:
            seen.append(self._codes(presence))
            return torch.zeros(len(presence), dtype=torch.float64)

        self._sample(k, record)
        return torch.unique(torch.cat([*seen, torch.tensor([2**k - 1])]))

    def object_values(self, images: Tensor, targets: Tensor, scenes: SceneRenderer) -> list[torch.Tensor]:
        """Per image, the Shapley value (float64) of each object of `scenes.objects()`, in that order."""
        objects = scenes.objects()
        if len(objects) != len(images):
            raise ValueError(f"scenes: {len(objects)} images' objects for {len(images)} images")
        plans = [self.coalitions(len(names)) for names in objects]
        removals = [
            [frozenset(n for j, n in enumerate(names) if not (int(c) >> j) & 1) for c in codes[:-1]]
            for names, codes in zip(objects, plans)
        ]
        rendered = scenes.render(removals)
        values = []
        with torch.no_grad():
            full = self.log_probs(images).gather(1, targets[:, None])[:, 0].double().cpu()
            for i, (names, codes, inputs) in enumerate(zip(objects, plans, rendered)):
                k = len(names)
                table = torch.full((2**k,), float("nan"), dtype=torch.float64)
                table[codes[:-1]] = self._target_log_probs(inputs.to(images.device), int(targets[i]))
                table[-1] = full[i]
                if k <= self.options["max_exact"]:
                    values.append(exact_shapley(table) if k else torch.zeros(0, dtype=torch.float64))
                else:
                    values.append(self._sample(k, lambda p, t=table: t[self._codes(p)]))
        return values

    def _target_log_probs(self, inputs: torch.Tensor, target: int) -> torch.Tensor:
        """log P(target) of each input, `internal_batch_size` inputs per forward pass."""
        parts = [
            self.log_probs(inputs[a : a + self.internal_batch_size])[:, target]
            for a in range(0, len(inputs), self.internal_batch_size)
        ]
        return torch.cat(parts).double().cpu() if parts else torch.zeros(0, dtype=torch.float64)

    @staticmethod
    def _codes(presence: torch.Tensor) -> torch.Tensor:
        """Presence bits (M, k) -> coalition codes (M,)."""
        return (presence.round().long().cpu() << torch.arange(presence.shape[1])).sum(1)

    def _sample(self, k: int, game: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """captum's ShapleyValueSampling of `game` (presence bits (M, k) -> values (M,)) from no object to all
        k, `n_samples` orders drawn from a generator seeded with `seed` (so two calls visit the same
        coalitions)."""

        def forward(presence: torch.Tensor) -> torch.Tensor:
            values = game(presence)
            if bool(torch.isnan(values).any()):
                raise RuntimeError("RenderedShapley: a sampled coalition was not rendered")
            return values

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options["seed"])
            phi = (
                captum_attr()
                .ShapleyValueSampling(forward)
                .attribute(
                    torch.ones(1, k, dtype=torch.float64),
                    baselines=torch.zeros(1, k, dtype=torch.float64),
                    n_samples=self.options["n_samples"],
                    perturbations_per_eval=k,
                )
            )
        return phi[0].double()
