"""Concepts the networks found themselves: NMF of a layer's activations, scored by removal, named by lift.

Plain functions on tensors and arrays (docs/concepts.md), in the spirit of CRAFT (Fel et al., CVPR 2023):

1. `layer_activations`: the non-negative activations A (N, C, h, w) of one layer (a preset or dotted path);
2. `fit_concepts`: scikit-learn's NMF of A over image locations, A ~ U W, gives the concept bank W (k, C),
   fitted on images that are NOT the scored ones (the validation split): fitting on the scored images lets
   the bank describe exactly those images, so their importances and names would be flattered (a leak);
3. `concept_maps`: the coefficients U (N, k, h, w) of other images with the bank fixed;
4. `concept_importance`: per image and concept, the drop of log P(target) when the concept is removed from
   the activation (A - U_k W_k, the factorisation's residual kept, clamped at 0); `importance_table`
   averages it per city with a place-resampling bootstrap interval;
5. `concept_objects` / `concept_names`: each concept's objects by lift (share of the concept's mass on the
   object over the object's share of the pixels) where label maps exist, or "matches no object";
6. `concept_strength` / `match_concepts`: do two networks find the same concepts (Hungarian matching on the
   correlation of per-image strengths over shared images)?
7. `probability_drop`: the same removal as a drop of P(target) (not log P), the unit of the causal effects,
   so a concept's removal can be set beside an object's (P(target) of the image: `removal_log_probs`' first
   column, from the same pass);
8. `object_importance`: the concepts' ranking of the objects (an object's concept importance is the largest
   importance among the city's concepts named after it), scored against the causal effects like R.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import NMF
from torch import nn

from citylens.analysis.stats import bootstrap_ci
from citylens.core.ade20k import class_name
from citylens.core.layers import LAYER_PRESETS, resolve_target_layer
from citylens.core.view import to_input

# One stage before the last convolution (docs/concepts.md, "Which layer"): 8x8 to 32x32 at 64 px, where the
# planted objects are still separate parts of the grid. VGG11: the ReLU of the first conv of the 4th block;
# ResNet18: the output of layer2 (the `layer2` preset); Simple: the ReLU of the 3rd conv; Simpler: the ReLU of
# the 2nd conv (each before its max-pool).
EARLIER_LAYERS: dict[str, str] = {
    "vgg11": "features.12",
    "resnet18": LAYER_PRESETS["resnet18"]["layer2"],
    "simple": "features.7",
    "simpler": "features.4",
}
TABLE_COLUMNS = ["city", "concept", "n_images", "importance", "importance_low", "importance_high"]
OBJECT_COLUMNS = ["concept", "object_id", "object", "mass_share", "pixel_share", "lift"]
RANKED_COLUMNS = ["city", "object", "concept", "importance", "importance_low", "importance_high", "kept"]

Array = torch.Tensor | np.ndarray


def _tensor(x: Array, name: str, ndim: int) -> torch.Tensor:
    """A float32 CPU tensor of `ndim` dims from a tensor or array, or a ValueError naming `name`."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32)


def _layer(network: nn.Module, layer: str) -> nn.Module:
    """The submodule named by a preset of the network or a dotted path; ValueError naming `layer` if none."""
    try:
        return resolve_target_layer(network, layer)[0]
    except ValueError as err:
        raise ValueError(f"concepts.layer: unknown layer {layer!r} ({err})") from err


def _device(network: nn.Module) -> torch.device:
    param = next(network.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batches(images: torch.Tensor, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Network inputs in batches on `device`; uint8 analysis views are normalised as at test time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        yield to_input(x) if x.dtype == torch.uint8 else x.float()


@contextlib.contextmanager
def _eval_mode(network: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the duration; every module's own mode is restored afterwards."""
    modes = [(module, module.training) for module in network.modules()]
    try:
        network.eval()
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


class _Reached(Exception):
    """Raised by the activation hook to stop the forward pass once the layer has run."""


def layer_activations(
    network: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """The ReLU-clamped output (N, C, h, w) of the layer `layer` (a dotted path, or a preset of the network)
    for network inputs `images` (float; uint8 analysis views are normalised first), float32 on the CPU.

    Clamped because NMF needs non-negative data; every default layer (EARLIER_LAYERS) is a ReLU output
    already. The forward pass stops at the layer.
    """
    module = _layer(network, layer)
    out: list[torch.Tensor] = []

    def hook(_: nn.Module, __: object, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise ValueError(f"concepts.layer {layer!r}: output is not an (N, C, h, w) tensor")
        out.append(output.detach().clamp_min(0).to("cpu", torch.float32))
        raise _Reached  # the layers after it are not needed

    handle = module.register_forward_hook(hook)
    try:
        with _eval_mode(network):
            for x in _batches(images, batch_size, _device(network)):
                try:
                    network(x)
                except _Reached:
                    pass
    finally:
        handle.remove()
    return torch.cat(out) if out else torch.zeros(0)


def _rows(activations: Array) -> torch.Tensor:
    """(N, C, h, w) -> (N*h*w, C): one row per image location."""
    a = _tensor(activations, "activations", 4)
    if (a < 0).any():
        raise ValueError("activations must be non-negative (layer_activations clamps them)")
    return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])


def fit_concepts(
    activations: Array, k: int, seed: int = 0, max_locations: int | None = 100_000, max_iter: int = 400
) -> np.ndarray:
    """The concept bank W (k, C) float32: scikit-learn's NMF of the activations (N, C, h, w) over locations.

    Each row is scaled to unit length (its coefficients carry the magnitude), so coefficients of different
    concepts are comparable. Deterministic for a `seed` (NNDSVDa initialisation; `seed` also draws the
    `max_locations` rows NMF sees when there are more, which bounds its time and memory).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"concepts.k must be an integer >= 1, got {k!r}")
    x = _rows(activations).numpy()
    if len(x) == 0:
        raise ValueError("activations: no image locations to factorise")
    if k > x.shape[1]:
        raise ValueError(f"concepts.k: {k} concepts exceed the layer's {x.shape[1]} channels")
    if max_locations is not None and len(x) > max_locations:
        rows = np.random.default_rng(seed).choice(len(x), max_locations, replace=False)
        x = x[np.sort(rows)]
    model = NMF(n_components=int(k), init="nndsvda", random_state=seed, max_iter=max_iter, tol=1e-4)
    model.fit(x.astype(np.float64))
    bank = model.components_.astype(np.float32)
    norms = np.linalg.norm(bank, axis=1, keepdims=True)
    return bank / np.maximum(norms, 1e-12)


def _check_bank(bank: Array, channels: int | None) -> np.ndarray:
    """The bank as a float32 (k, C) array; ValueError if it is not one, or C is not `channels`."""
    w = np.asarray(bank, dtype=np.float32)
    if w.ndim != 2 or len(w) == 0 or (channels is not None and w.shape[1] != channels):
        raise ValueError(f"bank: expected (k, {channels or 'C'}) with k >= 1, got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("bank: must be non-negative (a bank from fit_concepts)")
    return w


def nnls_fixed_bank(
    rows: torch.Tensor, bank: torch.Tensor, max_iter: int = 200, tol: float = 1e-6
) -> torch.Tensor:
    """min ||x - u W||^2 over u >= 0 for every row x of `rows` (M, C), the bank W (k, C) fixed: coordinate
    descent on the k x k Gram matrix (scikit-learn's NMF solver for W, batched in torch over all rows and
    on the rows' device), started from the clamped unconstrained least-squares solution. Stops when no
    coefficient moves by more than `tol` times the largest coefficient in one sweep. (M, k) float32."""
    x, w = rows.double(), bank.to(rows.device).double()
    gram, b = w @ w.T, x @ w.T  # (k, k), (M, k)
    u = (b @ torch.linalg.pinv(gram)).clamp_min(0)
    diag = gram.diagonal().clamp_min(1e-12)
    for _ in range(max_iter):
        before = u.clone()
        for j in range(len(w)):
            step = (b[:, j] - u @ gram[:, j]) / diag[j]
            u[:, j] = (u[:, j] + step).clamp_min(0)
        if (u - before).abs().max() <= tol * max(float(u.max()), 1e-12):
            break
    return u.float()


def concept_maps(activations: Array, bank: Array, max_iter: int = 200, tol: float = 1e-6) -> torch.Tensor:
    """The coefficients U (N, k, h, w) float32 of every location with the bank W fixed: non-negative least
    squares min ||A - U W|| over U >= 0 at each location (`nnls_fixed_bank`), the coefficients a fitted NMF
    would give the same locations, without refitting the bank."""
    a = _tensor(activations, "activations", 4)
    n, c, h, w = a.shape
    bank_ = torch.from_numpy(_check_bank(bank, c))
    u = nnls_fixed_bank(_rows(a), bank_, max_iter, tol)
    return u.reshape(n, h, w, -1).permute(0, 3, 1, 2).contiguous()


def _edited_log_probs(
    network: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    bank: Array,
    maps: Array,
    keep: torch.Tensor,
    batch_size: int,
    max_rows: int = 256,
    max_elements: int = 1 << 25,
) -> np.ndarray:
    """log P(target) of every image with its layer output edited E ways, (N, E) float64. Edit e keeps the
    share keep[e, k] in [0, 1] of each concept: A -> A - min(sum_k (1 - keep[e, k]) U_k W_k, max(A, 0)),
    i.e. max(A - removed, 0) on a ReLU output (a negative entry of a layer that is no ReLU is kept).

    A forward hook replaces the layer's output of a batch of B images by its B x E' edits (E' edits at a
    time: at most `max_rows` rows and `max_elements` activation values), so the layers after `layer` see the
    edits in one batch; that needs the layer to be a cut of the network (everything after it reads only its
    output), as every preset and EARLIER_LAYERS entry is.
    """
    module = _layer(network, layer)
    u = _tensor(maps, "maps", 4)
    w = torch.from_numpy(_check_bank(bank, None))
    if u.shape[1] != len(w):
        raise ValueError(f"maps: {u.shape[1]} concepts for a bank of {len(w)}")
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if not len(images) == len(u) == len(t):
        raise ValueError(f"{len(images)} images, {len(u)} concept maps and {len(t)} targets disagree")
    device = _device(network)
    state: dict[str, torch.Tensor] = {}

    def hook(_: nn.Module, __: object, output: torch.Tensor) -> torch.Tensor:
        coeff, drop = state["maps"], state["drop"]  # (B, k, h, w), (E', k)
        if output.ndim != 4 or output.shape[0] != len(coeff) or output.shape[1] != w.shape[1]:
            raise ValueError(
                f"concepts.layer {layer!r}: output shape {tuple(output.shape)} does not match the maps "
                f"{tuple(coeff.shape)} and the bank {tuple(w.shape)}"
            )
        if output.shape[2:] != coeff.shape[2:]:
            raise ValueError(
                f"maps: grid {tuple(coeff.shape[2:])} differs from the layer's {tuple(output.shape[2:])}"
            )
        removed = torch.einsum("ek,bkhw,kc->bechw", drop, coeff, w.to(output.device))
        edited = output[:, None] - torch.minimum(removed, output.clamp_min(0)[:, None])
        return edited.flatten(0, 1)

    handle = module.register_forward_hook(hook)
    out = []
    try:
        with _eval_mode(network):
            for i, x in enumerate(_batches(images, batch_size, device)):
                rows = slice(i * batch_size, i * batch_size + len(x))
                state["maps"] = u[rows].to(device)
                size = len(x) * w.shape[1] * u.shape[2] * u.shape[3]
                step = max(1, min(max_rows // len(x), max_elements // size))
                picked = []
                for start in range(0, len(keep), step):
                    drop = (1 - keep[start : start + step]).to(device, torch.float32)
                    state["drop"] = drop
                    logp = network(x).log_softmax(1)
                    if logp.shape[0] != len(x) * len(drop):
                        raise ValueError(
                            f"concepts.layer {layer!r} is not a cut of the network: {logp.shape[0]} "
                            f"outputs for {len(x)} images x {len(drop)} edits"
                        )
                    target = t[rows].to(device)[:, None, None].expand(-1, len(drop), 1)
                    picked.append(logp.reshape(len(x), len(drop), -1).gather(2, target)[..., 0].cpu())
                out.append(torch.cat(picked, 1))
    except RuntimeError as err:
        raise ValueError(
            f"concepts.layer {layer!r}: the network fails on the edited activations ({err}); the layer must "
            "be a cut of the network (everything after it reads only its output)"
        ) from err
    finally:
        handle.remove()
    return torch.cat(out).double().numpy() if out else np.zeros((0, len(keep)))


def removal_log_probs(
    network: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    bank: Array,
    maps: Array,
    batch_size: int = 8,
    max_rows: int = 256,
) -> np.ndarray:
    """Per image (N, k + 1): log P(target) of the image itself, then with each concept k removed from the
    layer's output, A -> max(A - U_k W_k, 0) (the rest of the factorisation and its residual kept).

    The layers before `layer` run once per image and the rest k + 1 times, the edits in one batch (the layer
    must be a cut of the network, as every preset and EARLIER_LAYERS entry is; `max_rows` bounds the rows of
    one such batch).
    """
    k = len(_check_bank(bank, None))
    keep = torch.cat([torch.ones(1, k), 1 - torch.eye(k)])  # the image itself, then each concept removed
    return _edited_log_probs(network, layer, images, targets, bank, maps, keep, batch_size, max_rows)


def concept_importance(
    network: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    bank: Array,
    maps: Array,
    batch_size: int = 8,
    max_rows: int = 256,
) -> np.ndarray:
    """Per image and concept (N, k): log P(target) of the image minus log P(target) with concept k removed
    (`removal_log_probs`). Positive: the concept supports the target city; 0 exactly for a concept with zero
    coefficients."""
    return log_prob_drops(
        removal_log_probs(network, layer, images, targets, bank, maps, batch_size, max_rows)
    )


def log_prob_drops(removal: np.ndarray) -> np.ndarray:
    """`removal_log_probs` (N, k + 1) -> (N, k): log P(target) of the image minus that with each concept
    removed, the concepts' importance."""
    return removal[:, :1] - removal[:, 1:]


def concept_sobol(
    network: nn.Module,
    layer: str,
    images: torch.Tensor,
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    bank: Array,
    maps: Array,
    n_designs: int = 16,
    seed: int = 0,
    batch_size: int = 8,
    max_rows: int = 256,
) -> np.ndarray:
    """Per image and concept (N, k): CRAFT's total Sobol index of the concept for log P(target), by Jansen's
    estimator over random masks that keep a uniform share of each concept's coefficients (two designs A, B of
    `n_designs` masks and the k mixes A_B^k: n_designs x (k + 2) edited passes after the layer per image).

    ST_k = mean((f(A) - f(A_B^k))^2) / (2 Var f): the share of the output's variance that involves concept k,
    interactions included; 0 exactly for a concept with zero coefficients, and 0 where f does not vary.
    The same masks serve every image (seeded). Optional: on the demo it ranked worse than removal at 8.6x the
    cost (docs/concepts.md).
    """
    if n_designs < 2:
        raise ValueError(f"n_designs must be >= 2, got {n_designs}")
    k = len(_check_bank(bank, None))
    rng = np.random.default_rng(seed)
    a, b = rng.random((n_designs, k)), rng.random((n_designs, k))
    mixes = []
    for j in range(k):
        mix = a.copy()
        mix[:, j] = b[:, j]
        mixes.append(mix)
    keep = torch.from_numpy(np.concatenate([a, b, *mixes])).float()
    f = _edited_log_probs(network, layer, images, targets, bank, maps, keep, batch_size, max_rows)
    fa, fb = f[:, :n_designs], f[:, n_designs : 2 * n_designs]
    var = np.concatenate([fa, fb], 1).var(1)
    total = np.stack(
        [((fa - f[:, (2 + j) * n_designs : (3 + j) * n_designs]) ** 2).mean(1) for j in range(k)], 1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        index = total / (2 * var[:, None])
    return np.where(var[:, None] > 0, index, 0.0)


def importance_table(
    importance: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    places: Sequence | np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per city and concept: n_images, the mean importance over the city's images and its percentile
    bootstrap interval (resampling `places` with all their images; None: each image its own place).
    Sorted by city, then importance (largest first)."""
    imp = np.asarray(importance, dtype=np.float64)
    t = np.asarray(targets).reshape(-1)
    if imp.ndim != 2 or len(imp) != len(t):
        raise ValueError(f"importance {imp.shape} and targets {t.shape}: need (N, k) and (N,)")
    if places is not None and len(places) != len(t):
        raise ValueError(f"places: {len(places)} for {len(t)} images")
    if len(t) and (t.min() < 0 or t.max() >= len(class_names)):
        raise ValueError(f"targets: a city index outside 0..{len(class_names) - 1}")
    rows = []
    for c, city in enumerate(class_names):
        mine = t == c
        if not mine.any():
            continue
        groups = None if places is None else np.asarray(places)[mine]
        low, high = bootstrap_ci(imp[mine].T, n_boot, level, seed, groups=groups)
        for j in range(imp.shape[1]):
            rows.append([city, j, int(mine.sum()), imp[mine, j].mean(), low[j], high[j]])
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.sort_values(["city", "importance"], ascending=[True, False], kind="stable")
    return table.reset_index(drop=True)


def upsample_maps(maps: Array, size: int | tuple[int, int]) -> torch.Tensor:
    """Concept maps (N, k, h, w) -> (N, k, H, W), bilinear (half-pixel, as the masks), clamped at 0."""
    u = _tensor(maps, "maps", 4)
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(u, size=size, mode="bilinear", align_corners=False).clamp_min(0)


def concept_objects(
    maps: Array,
    label_maps: Array,
    removable_ids: Sequence[int] | None = None,
    chunk: int = 32,
) -> pd.DataFrame:
    """Per concept and object: mass_share (the share of the concept's mass on the object's pixels),
    pixel_share (the object's share of all pixels) and lift = mass_share / pixel_share, over all images.

    maps (N, k, h, w): concept maps at the label maps' size (N, H, W), or at their own grid, in which case
    they are upsampled (`upsample_maps`) `chunk` images at a time, so the full-size maps never sit in memory
    at once. `removable_ids`: the ADE20K ids to report (e.g. the objects a counterfactual can remove), None:
    every class present. Lift 1 is chance; a concept that sits exactly on an object has lift 1 / pixel_share.
    """
    u = _tensor(maps, "maps", 4)
    labels = torch.as_tensor(np.asarray(label_maps)).long()
    if labels.ndim != 3 or len(labels) != len(u):
        raise ValueError(f"label_maps {tuple(labels.shape)} do not match the maps {tuple(u.shape)}")
    ids = torch.unique(labels).tolist()
    if removable_ids is not None:
        wanted = {int(r) for r in removable_ids}
        ids = [i for i in ids if i in wanted]
    size = tuple(labels.shape[1:])
    mass = torch.zeros(u.shape[1], len(ids), dtype=torch.float64)
    total = torch.zeros(u.shape[1], dtype=torch.float64)
    pixels = torch.zeros(len(ids), dtype=torch.float64)
    for start in range(0, len(u), chunk):
        part = u[start : start + chunk]
        part = part if tuple(part.shape[2:]) == size else upsample_maps(part, size)
        onehot = (labels[start : start + chunk, ..., None] == torch.tensor(ids)).float()  # (n, H, W, objects)
        mass += torch.einsum("nkhw,nhwo->ko", part, onehot).double()
        total += part.sum(dim=(0, 2, 3)).double()
        pixels += onehot.sum(dim=(0, 1, 2)).double()
    pixel_share = pixels / labels.numel()
    rows = []
    for o, obj in enumerate(ids):
        for j in range(u.shape[1]):
            share = float(mass[j, o] / total[j]) if total[j] > 0 else 0.0
            rows.append(
                [j, obj, class_name(obj), share, float(pixel_share[o]), share / float(pixel_share[o])]
            )
    table = pd.DataFrame(rows, columns=OBJECT_COLUMNS)
    table = table.sort_values(["concept", "lift"], ascending=[True, False], kind="stable")
    return table.reset_index(drop=True)


def concept_names(table: pd.DataFrame, min_lift: float = 1.5) -> pd.DataFrame:
    """Per concept of a `concept_objects` table: its best object by lift (with that lift and mass_share), or
    object None when no object reaches `min_lift`: the concept matches no object."""
    rows = []
    for concept, group in table.groupby("concept", sort=True):
        best = group.loc[group["lift"].idxmax()]
        name = best["object"] if best["lift"] >= min_lift else None
        rows.append((int(concept), name, float(best["lift"]), float(best["mass_share"])))
    concept, name, lift, share = zip(*rows) if rows else ((), (), (), ())
    # object dtype, so that "no object" stays None (a string column would turn it into NaN).
    return pd.DataFrame(
        {"concept": list(concept), "object": pd.Series(name, dtype=object), "lift": lift, "mass_share": share}
    )


def concept_strength(maps: Array) -> np.ndarray:
    """Per image and concept (N, k): the mean coefficient over the grid, how much of the concept it holds."""
    return _tensor(maps, "maps", 4).mean(dim=(2, 3)).numpy().astype(np.float64)


@dataclass(frozen=True)
class ConceptMatch:
    """Concept i of network a paired with concept j of network b, their correlations, and the agreement
    (the mean matched correlation, in [-1, 1])."""

    pairs: list[tuple[int, int]]
    correlations: np.ndarray
    agreement: float


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of a with every column of b; 0 where a column is constant."""
    za, zb = a - a.mean(0), b - b.mean(0)
    na, nb = np.linalg.norm(za, axis=0), np.linalg.norm(zb, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (za.T @ zb) / np.outer(na, nb)
    return np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)


def match_concepts(strength_a: np.ndarray, strength_b: np.ndarray) -> ConceptMatch:
    """Hungarian matching of two networks' concepts on the correlation of their per-image strengths over the
    same images (rows in the same order): the pairing of largest total correlation, min(k_a, k_b) pairs."""
    a, b = np.asarray(strength_a, np.float64), np.asarray(strength_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(
            f"strengths {a.shape} and {b.shape}: need (N, k_a) and (N, k_b) over the same images"
        )
    if len(a) < 2:
        raise ValueError(f"need at least 2 shared images to correlate, got {len(a)}")
    corr = _correlation(a, b)
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matched = corr[rows, cols]
    pairs = [(int(i), int(j)) for i, j in zip(rows, cols)]
    return ConceptMatch(pairs, matched, float(matched.mean()))


def object_importance(table: pd.DataFrame) -> pd.DataFrame:
    """The objects as the concepts rank them, from a concepts.csv table (city, concept, importance,
    importance_low, importance_high, object): per city and object that names at least one of the city's
    concepts, the largest importance among those concepts, with that concept and its interval; `kept` True.
    An object no concept is named after is not ranked (as an object below R's threshold). Columns
    RANKED_COLUMNS, sorted by city then importance (largest first)."""
    named = table[table["object"].map(lambda o: isinstance(o, str) and o != "")]
    if named.empty:
        return pd.DataFrame(columns=RANKED_COLUMNS)
    ordered = named.sort_values(
        ["city", "importance", "concept"], ascending=[True, False, True], kind="stable"
    )
    best = ordered.drop_duplicates(["city", "object"], keep="first")
    return best.assign(kept=True)[RANKED_COLUMNS].reset_index(drop=True)


def probability_drop(importance: np.ndarray, p_target: np.ndarray) -> np.ndarray:
    """Per image and concept (N, k): P(target) - P(target with the concept removed), from the removal's drop
    of log P (`concept_importance`) and P(target) of the image (N,): p (1 - exp(-importance)), exactly."""
    imp, p = np.asarray(importance, np.float64), np.asarray(p_target, np.float64)
    if imp.ndim != 2 or p.shape != (len(imp),):
        raise ValueError(f"importance {imp.shape} and P(target) {p.shape}: need (N, k) and (N,)")
    return p[:, None] * -np.expm1(-imp)
