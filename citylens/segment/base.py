"""The segmenter interface: analysis-view images in, ADE20K label maps out.

Every segmenter maps a batch of uint8 images (N, 3, S, S) in the analysis view, with their records, to a
uint8 label map (N, S, S) of ADE20K indices 0..149 (UNLABELLED = 255 where no class applies). `identity()`
names the segmenter exactly enough to key the label-map cache: two segmenters with the same identity must
produce the same label maps.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from citylens.core.ade20k import ADE20K_CLASSES
from citylens.core.io import sha256
from citylens.core.records import ImageRecord

NUM_CLASSES = len(ADE20K_CLASSES)


class Segmenter(ABC):
    """Labels analysis-view images with ADE20K classes; `size` is the analysis view's side S."""

    size: int

    @abstractmethod
    def identity(self) -> str:
        """A stable string naming kind, weights (path + content fingerprint) and input size."""

    @abstractmethod
    def __call__(self, images: torch.Tensor, records: Sequence[ImageRecord]) -> torch.Tensor:
        """Label maps (N, S, S) uint8 on the CPU for images (N, 3, S, S) uint8 and their records."""

    def _check_inputs(self, images: torch.Tensor, records: Sequence[ImageRecord]) -> None:
        """Refuse batches that are not (N, 3, S, S) uint8 with one record per image."""
        shape = (3, self.size, self.size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != shape:
            raise ValueError(
                f"expected uint8 images of shape (N, 3, {self.size}, {self.size}) in the analysis view, "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if len(records) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(records)} records")


def default_device(device: str | torch.device | None) -> torch.device:
    """The given device, else CUDA when available, else the CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256(path), memoised on (path, size, mtime_ns) by the cache."""
    return sha256(path)


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's content (first 16 hex digits), memoised per (path, size, mtime).

    A content hash rather than size/mtime keeps the cache key equal for the same weights copied to
    another machine, and the memo keeps repeated `identity()` calls cheap.
    """
    stat = os.stat(path)
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)[:16]


class NetworkSegmenter(Segmenter):
    """Shared batching for neural segmenters: device, sub-batches, inference mode, optional bf16 autocast.

    Subclasses implement `_logits(x)`: class scores (n, 150, h, w) for a float batch x (n, 3, S, S) in
    [0, 1] on the device; this class upsamples them bilinearly to S x S and takes the argmax.
    """

    def __init__(self, size: int, device: str | torch.device | None, batch_size: int, bf16: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.size = size
        self.device = default_device(device)
        self.batch_size = batch_size
        self.bf16 = bf16

    @abstractmethod
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (n, 150, h, w) for images x (n, 3, S, S) float in [0, 1] on the device."""

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA when asked for; a no-op elsewhere (CPU bf16 is slower, not faster)."""
        if self.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sub_batches(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, images.shape[0], self.batch_size):
            yield images[start : start + self.batch_size]

    def __call__(self, images: torch.Tensor, records: Sequence[ImageRecord]) -> torch.Tensor:
        self._check_inputs(images, records)
        out = torch.empty((images.shape[0], self.size, self.size), dtype=torch.uint8)
        done = 0
        with torch.inference_mode():
            for batch in self._sub_batches(images):
                x = batch.to(self.device, non_blocking=True).float().div_(255.0)
                with self._autocast():
                    logits = self._logits(x)
                if logits.shape[1] != NUM_CLASSES:
                    raise RuntimeError(
                        f"segmenter produced {logits.shape[1]} classes, expected {NUM_CLASSES}"
                    )
                logits = upsample(logits.float(), self.size)
                out[done : done + batch.shape[0]] = logits.argmax(dim=1).to(torch.uint8).cpu()
                done += batch.shape[0]
        return out


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear image resize with antialiasing (as PIL's bilinear resize), a no-op at equal size."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def upsample(logits: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear logits resize to size x size, half-pixel centres, as the segmenters' own eval code."""
    if tuple(logits.shape[-2:]) == (size, size):
        return logits
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel for x (n, 3, h, w) in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t
