"""Average residual AR between two runs' masks of the same test images (paper Sec. 3.4.1, Eq. 2).

AR_{m1,m2} = mean over images of sum_pixels |mask_m1 - mask_m2| / (H*W). Per-image values are kept (not only
their mean) because the bootstrap intervals in `stats` resample images. Differences and each image's sum are
float32 (float16 masks are widened first), everything after that float64; one kernel serves the one-pair
functions and the streaming all-pairs form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

Masks = np.ndarray | torch.Tensor


def _tensor(x: Masks) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 3:
        raise ValueError(f"masks must be (N,H,W), got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise ValueError(f"masks must be floating point, got {t.dtype}")
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _pair_residuals(ts: Sequence[torch.Tensor], index: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per-image mean |ts[i]-ts[j]| for every (i, j) in `index`: a (pairs x n) float64 array.

    On the CPU the images go through in blocks of about 1 MiB per run so that all pairs of a block are
    computed while it sits in cache (about twice as fast as whole-chunk passes); on a GPU in one block.
    Each image's sum is a float32 tree reduction (relative error ~1e-7 at 224x224), then float64.
    """
    n, h, w = ts[0].shape
    block = n if ts[0].device.type != "cpu" else max(1, (1 << 18) // (h * w))
    sums = torch.empty((len(index), n), dtype=ts[0].dtype, device=ts[0].device)
    buf = torch.empty((min(block, n), h, w), dtype=ts[0].dtype, device=ts[0].device)
    for s in range(0, n, block):
        part = [t[s : s + block] for t in ts]
        d = buf[: part[0].shape[0]]
        for p, (i, j) in enumerate(index):
            torch.sub(part[i], part[j], out=d)
            d.abs_()
            torch.sum(d, dim=(1, 2), out=sums[p, s : s + d.shape[0]])
    return sums.cpu().numpy().astype(np.float64) / (h * w)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"masks of shapes {tuple(a.shape)} and {tuple(b.shape)} differ: compare the same images at one "
            "analysis resolution (see to_common_size)"
        )


def residuals(masks_a: Masks, masks_b: Masks) -> np.ndarray:
    """Per-image residual sum|a-b|/(H*W), shape (N,), float64. Masks of different sizes are refused."""
    a, b = _tensor(masks_a), _tensor(masks_b)
    _check_pair(a, b)
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    return _pair_residuals([a, b], [(0, 1)])[0]


def average_residual(masks_a: Masks, masks_b: Masks) -> float:
    """AR: the mean over images of `residuals`."""
    r = residuals(masks_a, masks_b)
    if len(r) == 0:
        raise ValueError("no images to compare")
    return float(r.mean())


def to_common_size(masks: Masks, size: int | tuple[int, int]) -> Masks:
    """Resample (N,H,W) masks to `size` with bilinear interpolation, half-pixel centres (align_corners=False).

    Same as Grad-CAM's own upsampling (docs/explainers.md); returns the input's type (NumPy or torch)
    and dtype.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    is_np = not isinstance(masks, torch.Tensor)
    t = torch.from_numpy(np.ascontiguousarray(masks)) if is_np else masks
    if t.ndim != 3:
        raise ValueError(f"masks must be (N,H,W), got shape {tuple(t.shape)}")
    if tuple(t.shape[1:]) == hw:
        return masks
    work = t.double() if t.dtype == torch.float64 else t.float()
    out = F.interpolate(work[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0].to(t.dtype)
    return out.numpy() if is_np else out


class PairwiseResiduals:
    """Streams chunks of the same images from several runs and keeps every pair's per-image residuals.

    Each update reads one chunk per run once and computes all pairs from it; what grows with the number of
    images is only the (pairs x N) float64 array of per-image residuals.
    """

    def __init__(self, run_names: Sequence[str]) -> None:
        names = list(run_names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"need two or more distinct run names, got {names}")
        self.run_names = names
        self.pairs: list[tuple[str, str]] = list(combinations(names, 2))
        self._index = list(combinations(range(len(names)), 2))
        self._values = np.zeros((len(self.pairs), 0), dtype=np.float64)
        self._n = 0
        self._hw: tuple[int, int] | None = None

    @property
    def n_images(self) -> int:
        return self._n

    def update(self, chunks: Sequence[Masks] | Mapping[str, Masks]) -> None:
        """Add one (n,H,W) chunk per run, same images: a list in `run_names` order or a name -> chunk map."""
        if isinstance(chunks, Mapping):
            missing = set(self.run_names) - set(chunks)
            if missing:
                raise ValueError(f"no chunk for runs {sorted(missing)}")
            chunks = [chunks[name] for name in self.run_names]
        if len(chunks) != len(self.run_names):
            raise ValueError(f"{len(chunks)} chunks for {len(self.run_names)} runs")
        ts = [_tensor(c) for c in chunks]
        for t in ts[1:]:
            _check_pair(ts[0], t)
        if len({t.dtype for t in ts}) > 1:
            ts = [t.double() for t in ts]
        n, h, w = ts[0].shape
        if self._hw is None:
            self._hw = (h, w)
        elif (h, w) != self._hw:
            raise ValueError(f"chunk masks are {h}x{w}, earlier ones {self._hw[0]}x{self._hw[1]}")
        if n == 0:
            return
        self._reserve(self._n + n)
        self._values[:, self._n : self._n + n] = _pair_residuals(ts, self._index)
        self._n += n

    def _reserve(self, n: int) -> None:
        if n > self._values.shape[1]:
            grown = np.zeros((len(self.pairs), max(n, 2 * self._values.shape[1])), dtype=np.float64)
            grown[:, : self._n] = self._values[:, : self._n]
            self._values = grown

    def matrix(self) -> np.ndarray:
        """Per-image residuals as a (pairs x N) array, rows in `pairs` order (a copy)."""
        return self._values[:, : self._n].copy()

    def per_image(self) -> dict[tuple[str, str], np.ndarray]:
        """(run_a, run_b) -> per-image residuals (N,), in the order the images were streamed."""
        return {pair: self._values[p, : self._n].copy() for p, pair in enumerate(self.pairs)}

    def average(self) -> dict[tuple[str, str], float]:
        """(run_a, run_b) -> AR over all images streamed so far."""
        if self._n == 0:
            raise ValueError("no images streamed yet")
        means = self._values[:, : self._n].mean(axis=1)
        return {pair: float(means[p]) for p, pair in enumerate(self.pairs)}
