"""Causal object importance: deletion fills, batched measurement, tables, agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from citylens.analysis.causal import Probe, causal_agreement, causal_table, delete_objects, measure


def test_delete_objects_fills_only_the_mask() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 10:, :] = True
    for fill in ("mean", "blur", "surround"):
        out = delete_objects(image, masks, fill)
        assert out.shape == (2, 16, 16, 3)
        for k in range(2):
            assert np.array_equal(out[k][~masks[k]], image[~masks[k]])
            assert not np.array_equal(out[k][masks[k]], image[masks[k]])
    mean = image.reshape(-1, 3).mean(0).round()
    assert np.array_equal(delete_objects(image, masks, "mean")[0][masks[0]], np.tile(mean, (24, 1)))
    with pytest.raises(ValueError, match="fill: 'zero'"):
        delete_objects(image, masks, "zero")


def test_surround_deletion_leaves_no_silhouette() -> None:
    """A thin dark fence on a smooth gradient: `surround` restores the gradient under it (within one step of
    the ramp, 5.8 grey levels), where the mean colour leaves a fence-shaped patch of another shade."""
    ramp = np.linspace(40, 220, 32)
    background = np.stack([np.tile(ramp, (32, 1))] * 3, -1)
    image = background.round().astype(np.uint8)
    fence = np.zeros((1, 32, 32), bool)
    fence[0, 4:28, 24:26] = True
    image[fence[0]] = 0
    restored = delete_objects(image, fence, "surround", blur_sigma=0.1)[0]
    error = np.abs(restored[fence[0]].astype(float) - background[fence[0]])
    assert error.max() <= 5.9
    mean_error = np.abs(
        delete_objects(image, fence, "mean")[0][fence[0]].astype(float) - background[fence[0]]
    )
    assert mean_error.min() > 40


def _redness(views: np.ndarray) -> np.ndarray:
    """A fake two-city network: P(city 0) = mean red / 255."""
    p = views[..., 0].reshape(len(views), -1).mean(1) / 255
    return np.stack([p, 1 - p], 1)


def test_measure_rows_and_table_are_exact_and_batch_independent() -> None:
    def view(red: int) -> np.ndarray:
        return np.full((4, 4, 3), red, np.uint8)

    probes = [
        Probe(0, "x", 0, "p0", ["sign", "car"], ["deletion"] * 2, np.stack([view(204), view(51), view(204)])),
        Probe(1, "x", 0, "p1", ["sign"], ["deletion"], np.stack([view(153), view(102)])),
        Probe(2, "y", 1, "p2", ["sign"], ["deletion"], np.stack([view(51), view(102)])),
    ]
    rows = measure(probes, _redness, batch_size=2)
    assert rows.equals(measure(probes, _redness, batch_size=1000))
    assert rows["effect"].round(6).tolist() == [0.6, 0.0, 0.2, 0.2]
    assert rows["flipped"].tolist() == [True, False, True, False]
    table = causal_table(rows, n_boot=200)
    sign_x = table[(table.city == "x") & (table.object == "sign")].iloc[0]
    assert sign_x.n_images == 2 and sign_x.effect == pytest.approx(0.4) and sign_x.flip_rate == 1.0
    assert sign_x.ci_low == pytest.approx(0.2) and sign_x.ci_high == pytest.approx(0.6)
    assert table.columns.tolist() == [
        "city", "object", "n_images", "effect", "ci_low", "ci_high", "flip_rate", "method"
    ]  # fmt: skip
    assert table[table.city == "x"]["object"].tolist() == ["sign", "car"]  # largest effect first
    assert set(table["method"]) == {"deletion"}
    with pytest.raises(ValueError, match="2 views for 2 objects"):
        Probe(3, "x", 0, "p3", ["sign", "car"], ["deletion"] * 2, np.stack([view(1), view(2)]))


def test_agreement_is_spearman_over_common_pairs() -> None:
    ref = pd.DataFrame(
        {
            "city": ["a"] * 4,
            "object": list("pqrs"),
            "effect": [0.4, 0.3, 0.2, 0.1],
            "method": "counterfactual",
        }
    )
    same = ref.assign(effect=[0.9, 0.5, 0.1, 0.0], method="deletion")
    flipped = ref.assign(effect=[0.0, 0.1, 0.5, 0.9], method="deletion")
    extra = pd.concat([same, same.head(1).assign(object="t")])
    assert causal_agreement(ref, same)["spearman"][0] == pytest.approx(1.0)
    assert causal_agreement(ref, flipped)["spearman"][0] == pytest.approx(-1.0)
    assert causal_agreement(ref, extra)["n_pairs"][0] == 4
