"""2-D map of the masks: PCA to 50 dimensions, then t-SNE (paper Sec. 2.2, Figures 3-4).

The paper clusters the masks themselves, not the explanations. Masks are smooth Grad-CAM maps upsampled from
a 7x7 layer, so resampling each to side x side (32 by default) first loses almost nothing and bounds memory:
only N x side^2 float32 values are ever held (30,000 masks at side 32: 123 MB), never full-size masks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

Masks = np.ndarray | torch.Tensor


def resample_masks(chunks: Masks | Iterable[Masks], side: int = 32) -> np.ndarray:
    """Stream chunks of (n,H,W) masks into one (N, side*side) float32 matrix.

    Shrinking uses area averaging (each output pixel is the mean of the input pixels it covers, no
    aliasing); enlarging uses bilinear interpolation with half-pixel centres. A single (N,H,W) array is
    taken as one chunk.
    """
    if side < 1:
        raise ValueError(f"side must be positive, got {side}")
    if isinstance(chunks, (np.ndarray, torch.Tensor)):
        chunks = [chunks]
    rows = []
    for chunk in chunks:
        t = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.asarray(chunk))
        if t.ndim != 3:
            raise ValueError(f"mask chunks must be (n,H,W), got shape {tuple(t.shape)}")
        t = t.float()[:, None]
        h, w = t.shape[-2:]
        if (h, w) != (side, side):
            mode = "area" if h >= side and w >= side else "bilinear"
            kwargs = {} if mode == "area" else {"align_corners": False}
            t = F.interpolate(t, size=(side, side), mode=mode, **kwargs)
        rows.append(t.reshape(t.shape[0], -1).cpu().numpy())
    if not rows:
        return np.zeros((0, side * side), dtype=np.float32)
    return np.concatenate(rows, axis=0)


def pca_features(features: np.ndarray, pca_dims: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA of (N, D) features to min(pca_dims, N-1, D) dims; returns (scores, explained variance ratio)."""
    n, d = features.shape
    if n < 2:
        raise ValueError(f"need at least 2 masks to embed, got {n}")
    dims = max(1, min(pca_dims, n - 1, d))
    pca = PCA(n_components=dims, random_state=seed)
    scores = pca.fit_transform(features)
    return scores.astype(np.float32), pca.explained_variance_ratio_


def tsne_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0, **tsne_kwargs) -> np.ndarray:
    """t-SNE of (N, d) features to (N, 2); perplexity is clamped to (N-1)/3 (at least 1), below N."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points for t-SNE, got {n}")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    centred = features - features.mean(0, keepdims=True)
    scale = float(np.abs(centred).max()) if centred.size else 0.0
    if not np.isfinite(scale) or scale < 1e-12:
        # Identical masks (e.g. a 1x1 target layer, or an untrained network) have no geometry to map, and
        # sklearn's Barnes-Hut t-SNE crashes the process on the NaNs they produce.
        warnings.warn("all masks are identical: t-SNE map set to the origin", RuntimeWarning, stacklevel=2)
        return np.zeros((n, 2))
    singular = np.linalg.svd(centred / scale, compute_uv=False)
    # A PCA initialisation divides by the spread of the 2nd component: use a random one below rank 2.
    init = "pca" if len(singular) > 1 and singular[1] > 1e-6 * singular[0] else "random"
    params = {"n_components": 2, "perplexity": perplexity, "init": init, "random_state": seed}
    params.update(tsne_kwargs)
    return TSNE(**params).fit_transform(features).astype(np.float64)


def embed_masks(
    chunks: Masks | Iterable[Masks],
    side: int = 32,
    pca_dims: int = 50,
    perplexity: float = 30.0,
    seed: int = 0,
    **tsne_kwargs,
) -> np.ndarray:
    """(N, 2) t-SNE coordinates of masks streamed in (n,H,W) chunks: resample, PCA, t-SNE.

    Extra keyword arguments go to sklearn's TSNE. For the PCA's explained variance, call `resample_masks`,
    `pca_features` and `tsne_2d` in turn (this function is exactly that).
    """
    scores, _ = pca_features(resample_masks(chunks, side), pca_dims, seed)
    return tsne_2d(scores, perplexity, seed, **tsne_kwargs)
