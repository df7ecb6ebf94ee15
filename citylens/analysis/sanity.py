"""Model parameter randomisation test (Adebayo et al. 2018): do the masks depend on the learned weights?

The trained network's masks are compared with the masks of copies whose weights are re-initialised, cascading
from the logits down block by block (step 1 re-initialises the top block, step 2 also the next one, ... until
every parameter is random), and of a copy re-initialised fully and independently (`full`). Each block is
re-initialised with its modules' own `reset_parameters`, seeded, on a deep copy: the network passed in is
never modified. Per step: the mean over images of the Spearman rank correlation between an image's two masks.
Masks are non-negative, so Adebayo's absolute-value variant equals the plain one (docs/faithfulness.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from citylens.analysis.stats import bootstrap_ci
from citylens.core.layers import arch_of
from citylens.explain.methods import GradCAM

Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ExplainerFactory = Callable[[nn.Module, nn.Module], Explainer]
SANITY_FILE = "sanity.csv"
# An explainer whose masks keep a mean rank correlation above this after full randomisation does not depend
# on what the network learned (docs/faithfulness.md).
SANITY_FLAG_RHO = 0.5
SANITY_COLUMNS = [
    "step",
    "step_name",
    "modules",
    "explainer",
    "mean_spearman",
    "ci_low",
    "ci_high",
    "n_images",
    "n_undefined",
]
# The torchvision ResNet18's blocks, logits first; the stem (conv1 + bn1) ends the cascade.
RESNET_BLOCKS = [
    ("fc", ["fc"]),
    ("layer4", ["layer4"]),
    ("layer3", ["layer3"]),
    ("layer2", ["layer2"]),
    ("layer1", ["layer1"]),
    ("conv1", ["conv1", "bn1"]),
]
STAGED = ("vgg11", "simple", "simpler")
FULL = "full"


def _stages(network: nn.Module) -> list[tuple[str, list[str]]]:
    """A features + classifier network's blocks, last first: the classifier (its linear layers), then one
    block per stage of convolutions ending in a max-pool, named block<i> from the input up."""
    for part in ("features", "classifier"):
        if not isinstance(getattr(network, part, None), nn.Sequential):
            raise ValueError(f"randomisation steps: the network has no Sequential {part!r}")
    stages: list[list[str]] = [[]]
    for i, module in enumerate(network.features):
        if any(True for _ in module.parameters(recurse=False)):
            stages[-1].append(f"features.{i}")
        if isinstance(module, nn.MaxPool2d) and stages[-1]:
            stages.append([])
    stages = [s for s in stages if s]
    head = [f"classifier.{i}" for i, m in enumerate(network.classifier) if any(True for _ in m.parameters())]
    return [("classifier", head)] + [(f"block{i + 1}", s) for i, s in reversed(list(enumerate(stages)))]


def randomisation_steps(network: nn.Module) -> list[tuple[str, list[str]]]:
    """The cascade's blocks top-down as (step name, dotted module paths), for a network of one of the four
    architectures (`arch_of`).

    ResNet18: fc, layer4, layer3, layer2, layer1, conv1 (with bn1). VGG11, Simple, Simpler: the classifier's
    linear layers, then each stage of convolutions up to its max-pool, block5 .. block1 for VGG11 (block5 =
    features.16 and features.18), block4 .. block1 for Simple, block3 .. block1 for Simpler (one convolution
    each). The blocks together hold every parameter of the network (checked), so the last cascade step is a
    fully random network.
    """
    arch = arch_of(network)
    if arch == "resnet18":
        steps = RESNET_BLOCKS
    elif arch in STAGED:
        steps = _stages(network)
    else:
        raise ValueError(
            f"no randomisation steps for a network of type {type(network).__name__}: "
            f"it is none of {['resnet18', *STAGED]}"
        )
    modules = dict(network.named_modules())
    covered: set[int] = set()
    for name, paths in steps:
        for path in paths:
            if path not in modules:
                raise ValueError(f"randomisation step {name!r}: {arch} network has no module {path!r}")
            covered |= {id(p) for p in modules[path].parameters()}
    left = [n for n, p in network.named_parameters() if id(p) not in covered]
    if left:
        raise ValueError(f"randomisation steps for {arch} leave parameters untouched: {left}")
    return [(name, list(paths)) for name, paths in steps]


def reinitialise(network: nn.Module, paths: Sequence[str], seed: int) -> None:
    """Re-initialise, in place, every submodule under `paths` with its own reset_parameters, seeded.

    The global RNG state is saved and restored, so the caller's random stream is untouched.
    """
    modules = dict(network.named_modules())
    devices = [p.device for p in network.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=list({d.index for d in devices})), torch.no_grad():
        torch.manual_seed(seed)
        for path in paths:
            for module in modules[path].modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()


def rowwise_spearman(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Spearman rank correlation of each pair of rows (images) of two (N, ...) arrays; NaN for a constant row.

    Ranks are averaged over ties (as scipy.stats.spearmanr ranks), then correlated with Pearson's formula.
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"masks to correlate differ in shape: {a.shape} vs {b.shape}")
    ra = stats.rankdata(a, axis=1)
    rb = stats.rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denom
    return np.where(denom > 0, rho, np.nan)


def predictions(network: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The network's predicted classes in eval mode, computed on a copy so the network's modes stay as set."""
    evaluated = copy.deepcopy(network).eval()
    with torch.no_grad():
        return torch.cat(
            [evaluated(images[s : s + batch_size]).argmax(1) for s in range(0, len(images), batch_size)]
        )


def _masks(explainer: Explainer, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> np.ndarray:
    parts = [
        explainer(images[s : s + batch_size], targets[s : s + batch_size]).cpu().numpy()
        for s in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,) + tuple(images.shape[-2:]), np.float32)


def _layer_path(network: nn.Module, layer: nn.Module) -> str:
    for name, module in network.named_modules():
        if module is layer:
            return name
    raise ValueError(f"target layer {type(layer).__name__} is not a submodule of the network")


def sanity_check(
    network: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | torch.Tensor | None,
    make_explainer: ExplainerFactory = GradCAM,
    explainer_name: str = "gradcam",
    seed: int = 0,
    batch_size: int = 32,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """The randomisation test of one explainer on `images` (normalised (N, 3, H, W) network inputs).

    `make_explainer(network, layer)` builds the explainer (GradCAM, or build_explainer of a method). Every
    image is explained for the same class in every step: its entry of `targets` (e.g. the true cities), or
    with None the trained network's prediction. Rows, columns SANITY_COLUMNS: step 0 `none` (the trained
    network against itself), steps 1.. the cascade of `randomisation_steps` (`modules`: those newly
    re-initialised at that step, the earlier ones stay random), last `full` (all weights re-initialised at
    once with another seed). A constant (e.g. all-zero) randomised mask counts as rho 0; images whose
    trained mask is constant are left out of every step (n_undefined). ci_low / ci_high: 95% bootstrap
    interval over images.
    """
    steps = randomisation_steps(network)
    path = _layer_path(network, layer)
    device = next(network.parameters()).device
    images = images.to(device)
    if targets is None:
        targets = predictions(network, images, batch_size)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
    if len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images")

    def masks_of(net: nn.Module) -> np.ndarray:
        modules = dict(net.named_modules())
        return _masks(make_explainer(net, modules[path]), images, targets, batch_size)

    trained = masks_of(network)
    rows = [_row(0, "none", [], explainer_name, trained, trained, n_boot, seed)]
    cascade = copy.deepcopy(network)
    for i, (name, paths) in enumerate(steps, start=1):
        reinitialise(cascade, paths, seed + i)
        rows.append(_row(i, name, paths, explainer_name, trained, masks_of(cascade), n_boot, seed))
    del cascade
    full = copy.deepcopy(network)
    everything = [p for _, paths in steps for p in paths]
    reinitialise(full, everything, seed + len(steps) + 1)
    rows.append(_row(len(steps) + 1, FULL, everything, explainer_name, trained, masks_of(full), n_boot, seed))
    return pd.DataFrame(rows, columns=SANITY_COLUMNS)


def _row(
    step: int,
    name: str,
    paths: Sequence[str],
    explainer: str,
    trained: np.ndarray,
    randomised: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict:
    rho = rowwise_spearman(trained, randomised)
    # A random network's mask is often all zero: it shares no ranking with the trained mask, rho 0. Images
    # whose trained mask is constant have nothing to compare and are left out of every step.
    informative = np.ptp(trained.reshape(len(trained), -1), axis=1) > 0
    rho = np.where(informative, np.nan_to_num(rho, nan=0.0), np.nan)
    ok = rho[np.isfinite(rho)]
    low, high = bootstrap_ci(ok, n_boot=n_boot, seed=seed) if len(ok) else (float("nan"),) * 2
    return {
        "step": step,
        "step_name": name,
        "modules": " ".join(paths),
        "explainer": explainer,
        "mean_spearman": float(ok.mean()) if len(ok) else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n_images": len(ok),
        "n_undefined": len(rho) - len(ok),
    }
