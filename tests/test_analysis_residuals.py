"""Average residual by hand, the streaming all-pairs form against pairwise calls, and size handling."""

from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from citylens.analysis.residuals import PairwiseResiduals, average_residual, residuals, to_common_size


def test_hand_computed_residuals():
    ones, zeros = np.ones((2, 4, 4), np.float32), np.zeros((2, 4, 4), np.float32)
    assert average_residual(ones, zeros) == 1.0
    assert average_residual(ones, ones) == 0.0
    checker = (np.indices((4, 4)).sum(axis=0) % 2).astype(np.float32)
    half = np.stack([checker, np.full((4, 4), 0.25, np.float32)])
    # image 0: half its pixels differ by 1 -> 0.5; image 1: every pixel differs by 0.25
    np.testing.assert_allclose(residuals(half, zeros), [0.5, 0.25])
    assert average_residual(half, zeros) == pytest.approx(0.375)
    a = np.full((1, 3, 5), 0.25, np.float32)
    b = np.full((1, 3, 5), 0.75, np.float32)
    assert average_residual(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(0.5)


def test_matches_float64_reference():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 224, 224), dtype=np.float32), rng.random((3, 224, 224), dtype=np.float32)
    ref = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(1, 2))
    np.testing.assert_allclose(residuals(a, b), ref, rtol=1e-6)
    np.testing.assert_allclose(residuals(a.astype(np.float16), b.astype(np.float16)), ref, atol=1e-3)


def test_size_mismatch_refused_and_common_size():
    a = np.random.default_rng(2).random((2, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="to_common_size"):
        residuals(a, np.zeros((2, 4, 4), np.float32))
    small = to_common_size(a, 4)
    assert isinstance(small, np.ndarray) and small.shape == (2, 4, 4) and small.dtype == np.float32
    expected = F.interpolate(torch.from_numpy(a)[:, None], size=(4, 4), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(small, expected[:, 0].numpy())
    const = to_common_size(torch.full((1, 7, 7), 0.3), (224, 224))
    assert isinstance(const, torch.Tensor) and torch.allclose(const, torch.full((1, 224, 224), 0.3))
    assert to_common_size(a, 8) is a


def test_streaming_all_pairs_equals_pairwise():
    rng = np.random.default_rng(3)
    runs = ["vgg11", "resnet18", "simple", "simpler"]
    n = 37
    masks = {r: rng.random((n, 16, 12)).astype(np.float32) for r in runs}
    pr = PairwiseResiduals(runs)
    bounds = [0, 5, 5, 20, 36, 37]
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        chunk = [masks[r][s:e] for r in runs]
        pr.update(chunk if s % 2 else {r: torch.from_numpy(c) for r, c in zip(runs, chunk, strict=True)})
    assert pr.n_images == n
    assert pr.pairs == list(combinations(runs, 2))
    per_image, avg = pr.per_image(), pr.average()
    for a, b in combinations(runs, 2):
        np.testing.assert_allclose(per_image[(a, b)], residuals(masks[a], masks[b]), rtol=1e-6)
        assert avg[(a, b)] == pytest.approx(average_residual(masks[a], masks[b]), rel=1e-6)
    assert pr.matrix().shape == (6, n)


def test_streaming_refuses_inconsistent_chunks():
    pr = PairwiseResiduals(["a", "b", "c"])
    with pytest.raises(ValueError):
        pr.update([np.zeros((2, 4, 4), np.float32)] * 2)
    with pytest.raises(ValueError):
        pr.update([np.zeros((2, 4, 4), np.float32)] * 2 + [np.zeros((2, 5, 4), np.float32)])
    pr.update([np.zeros((2, 4, 4), np.float32)] * 3)
    with pytest.raises(ValueError):
        pr.update([np.zeros((2, 8, 8), np.float32)] * 3)
    with pytest.raises(ValueError):
        PairwiseResiduals(["a", "a"])
