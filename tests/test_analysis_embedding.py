"""Mask embedding: shape, determinism, and separation of two clearly different mask families."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from citylens.analysis.embedding import embed_masks, pca_features, resample_masks


def _families(n_per: int = 50, side: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs near the top-left (family 0) or bottom-right (family 1), jittered, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    masks, labels = [], []
    for fam, centre in enumerate([(10, 10), (30, 28)]):
        for _ in range(n_per):
            cy, cx = np.array(centre) + rng.uniform(-3, 3, size=2)
            m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2)) + 0.1 * rng.random((side, side))
            masks.append(m / m.max())
            labels.append(fam)
    return np.array(masks, dtype=np.float32), np.array(labels)


def test_embedding_separates_families_and_is_deterministic():
    masks, labels = _families()
    chunks = [masks[i : i + 16] for i in range(0, len(masks), 16)]
    coords = embed_masks(iter(chunks), side=16, seed=0, max_iter=300)
    assert coords.shape == (len(masks), 2) and np.isfinite(coords).all()
    again = embed_masks(torch.from_numpy(masks), side=16, seed=0, max_iter=300)
    np.testing.assert_allclose(coords, again, rtol=1e-5, atol=1e-5)
    acc = cross_val_score(KNeighborsClassifier(5), coords, labels, cv=5).mean()
    assert acc > 0.9


def test_resample_and_pca_dims():
    masks = np.random.default_rng(1).random((5, 64, 48)).astype(np.float32)
    x = resample_masks([masks[:2], masks[2:]], side=8)
    assert x.shape == (5, 64) and x.dtype == np.float32
    # area resampling: each output pixel is the mean of its 8x6 input block
    assert x[0, 0] == pytest.approx(masks[0, :8, :6].mean(), rel=1e-5)
    up = resample_masks(np.full((1, 4, 4), 0.5, np.float32), side=8)
    np.testing.assert_allclose(up, 0.5)
    scores, evr = pca_features(x, pca_dims=50)
    assert scores.shape == (5, 4) and len(evr) == 4
    coords = embed_masks(masks, side=8, perplexity=30)  # perplexity clamped below N=5
    assert coords.shape == (5, 2) and np.isfinite(coords).all()
    with pytest.raises(ValueError):
        embed_masks(masks[:1], side=8)


def test_identical_or_rank_one_masks_do_not_crash_tsne():
    import pytest

    from citylens.analysis.embedding import embed_masks

    same = np.full((12, 8, 8), 0.5, np.float32)
    with pytest.warns(RuntimeWarning, match="identical"):
        coords = embed_masks(same, side=8)
    assert coords.shape == (12, 2) and np.all(coords == 0)
    ramp = np.linspace(0, 1, 12, dtype=np.float32)[:, None, None] * np.ones((12, 8, 8), np.float32)
    coords = embed_masks(ramp, side=8)
    assert coords.shape == (12, 2) and np.isfinite(coords).all()
