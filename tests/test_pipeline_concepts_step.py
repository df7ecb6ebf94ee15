"""The concepts step on one-cue synthetic cities: fitted on validation images, scored on the test images,
named by lift among every labelled class, ranked against a causal table; its settings checked by key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torch import nn

from citylens.app.config import ConfigError, step_options
from citylens.pipeline import Variant
from citylens.pipeline.concepts_step import COLUMNS, causal_ranks, concept_layer
from citylens.pipeline.context import Context
from citylens.segment import GroundTruthSegmenter


def test_the_cue_citys_top_concept_is_named_after_the_cue_and_ranked_first(
    one_cue, one_thread, tmp_path: Path, cache_dir: Path
):
    net, dm = one_cue
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    causal = pd.DataFrame(
        {"city": ["a", "a", "b"], "object": ["signboard", "tree", "tree"], "effect": [0.4, 0.01, 0.02],
         "method": ["counterfactual"] * 3}
    )  # fmt: skip
    causal.to_csv(run_dir / "causal.csv", index=False)
    segmenter = GroundTruthSegmenter(dm.input_size)
    context = Context(net, "simple", dm.split_view("test"), run_dir, Variant(), segmenter, cache_dir,
                      fit=dm.split_view("val"))  # fmt: skip
    # "6": the tiny network's second conv block (16x16 at 32 px), one stage before its last conv
    result = step_options("concepts", layer="6", k=6, n_boot=200).run(context)
    table = pd.read_csv(run_dir / "concepts.csv")
    assert list(table.columns) == COLUMNS and set(table["city"]) == {"a", "b"}
    assert (
        len(table) == 12
        and np.isfinite(table[["importance", "importance_low", "importance_high"]]).all().all()
    )
    top = table[table.city == "a"].iloc[0]
    assert top.importance_low > 0 and top.object == "signboard" and top.causal_rank == 1.0, table
    # the mean drop of P(a) without the cue's concept: positive, a difference of probabilities
    assert 0 < top.importance_p <= 1 and table["importance_p"].abs().max() <= 1
    assert (table["importance_p"][table["importance"] == 0] == 0).all()
    maps = np.load(run_dir / "concepts" / "maps.npy")
    assert maps.shape == (len(dm.splits["test"]), 6, 16, 16) and (maps >= 0).all()
    assert np.load(run_dir / "concepts" / "bank.npy").shape == (6, 32)
    assert (run_dir / "concepts" / "figures" / "concepts_a.png").stat().st_size > 5000
    assert set(result.figures) == {"concepts_a", "concepts_b"} and run_dir / "concepts.csv" in result.files


def test_without_a_fitting_split_nothing_is_written(split_data, tmp_path: Path, caplog):
    context = Context(nn.Identity(), "simple", split_data(), tmp_path, Variant())
    assert step_options("concepts").run(context).files == []
    assert "concepts skipped: no fitting split" in caplog.text and not (tmp_path / "concepts.csv").exists()


def test_layer_and_ranks(networks):
    assert (
        concept_layer("earlier", networks["resnet18"]) == "layer2.-1"
        and concept_layer("earlier", networks["simple"]) == "features.7"
        and concept_layer("features.3", nn.Identity()) == "features.3"
    )
    with pytest.raises(ValueError, match="not for a network of type Identity; give a dotted path"):
        concept_layer("earlier", nn.Identity())
    table = pd.DataFrame({"city": ["a", "a", "b"], "object": ["car", None, "car"]})
    causal = pd.DataFrame({"city": ["a", "a"], "object": ["tree", "car"], "effect": [0.3, 0.1],
                           "method": ["counterfactual", "counterfactual"]})  # fmt: skip
    ranks = causal_ranks(causal, table)
    assert ranks[0] == 2.0 and np.isnan(ranks[1]) and np.isnan(ranks[2])
    assert all(np.isnan(causal_ranks(None, table)))


@pytest.mark.parametrize("key", ["k", "fit_images", "batch_size", "figure_images"])
def test_settings_are_checked_naming_the_key(key: str):
    with pytest.raises(ConfigError, match=f"analysis.steps.concepts.{key}: must be >= 1, got 0"):
        step_options("concepts", **{key: 0})
