"""The faithfulness step: the sanity check's balanced image sample, explainers by name, the whole step on a
plain network (no Lightning), its settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from citylens.models.build import build_model
from citylens.pipeline import Variant
from citylens.pipeline.faithfulness_step import (
    FaithfulnessOptions,
    explainer_factory,
    run_faithfulness,
    sanity_sample,
)


def test_sample_is_balanced_and_reads_the_right_rows(split_data):
    data = split_data()
    images, labels, idx = sanity_sample(data, 6)
    assert len(idx) == 6 and np.bincount(labels).tolist() == [3, 3]
    expected = torch.from_numpy(data.views[[data.row[data.splits["test"][i].image_id] for i in idx]])
    restored = images * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    restored = (restored + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) * 255
    np.testing.assert_allclose(restored.permute(0, 2, 3, 1).numpy(), expected.numpy(), atol=1e-3)


def test_unknown_explainer_refused_by_key():
    with pytest.raises(ValueError, match="explainer: unknown method 'deconvnet'"):
        explainer_factory("deconvnet")


def test_whole_step_on_a_plain_network(split_data, hand_causal, hand_ratios, tmp_path: Path):
    """run_faithfulness takes an nn.Module and an architecture name: what a notebook has, no Lightning."""
    torch.manual_seed(0)
    network, _ = build_model("simple", 2, input_size=32)
    variant = Variant(threshold=0.3)
    out = variant.dir(tmp_path)
    out.mkdir(parents=True)
    hand_ratios.to_csv(out / "object_ratios.csv", index=False)
    hand_causal.to_csv(tmp_path / "causal.csv", index=False)
    tables = run_faithfulness(
        network, "simple", variant, split_data(), tmp_path, FaithfulnessOptions(sanity=False)
    )
    assert list(tables) == ["faithfulness"] and not (out / "sanity.csv").exists()
    written = pd.read_csv(out / "faithfulness.csv")
    # at threshold 0.3 tokyo's R order (road > car > fence > signboard) is the reverse of the causal one
    assert written["threshold"].tolist() == [0.3] and written["city"].tolist() == ["tokyo"]
    assert written["spearman"].tolist() == pytest.approx([-1.0])
    tables = run_faithfulness(
        network, "simple", variant, split_data(), tmp_path, FaithfulnessOptions(n_images=4)
    )
    assert set(tables) == {"faithfulness", "sanity"} and (out / "sanity.csv").is_file()


def test_options_are_checked_naming_the_key():
    with pytest.raises(ValueError, match="callbacks.faithfulness.default_k"):
        FaithfulnessOptions(default_k=0)
    with pytest.raises(ValueError, match="callbacks.faithfulness.n_images"):
        FaithfulnessOptions(n_images=0)
