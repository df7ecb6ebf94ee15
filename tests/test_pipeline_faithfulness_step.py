"""The faithfulness step: the sanity check's balanced image sample, explainers by name, the whole step on a
plain network and a hand-made run folder (no Lightning), its settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from citylens.analysis.faithfulness import faithfulness
from citylens.analysis.sanity import SANITY_COLUMNS
from citylens.app.config import ConfigError, step_options
from citylens.models.build import build_model
from citylens.pipeline import Variant
from citylens.pipeline.context import Context
from citylens.pipeline.faithfulness_step import explainer_factory, sanity_sample
from citylens.pipeline.steps import ordered


def context(data, run_dir: Path, variant: Variant | None = None) -> Context:
    torch.manual_seed(0)
    network = build_model("simple", 2, input_size=data.input_size)
    return Context(network, "simple", data, run_dir, variant or Variant())


def hand_run(run_dir: Path, variant: Variant, ratios: pd.DataFrame, causal: pd.DataFrame | None) -> Path:
    out = variant.dir(run_dir)
    out.mkdir(parents=True)
    ratios.to_csv(out / "object_ratios.csv", index=False)
    if causal is not None:
        causal.to_csv(run_dir / "causal.csv", index=False)
    return out


def test_sample_is_balanced_and_reads_the_right_rows(split_data):
    data = split_data()
    images, labels, idx = sanity_sample(data, 6, 0)
    assert len(idx) == 6 and np.bincount(labels).tolist() == [3, 3]
    expected = data.images[data.rows[idx]]  # rows run backwards: a lookup by position would differ
    restored = images * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    restored = (restored + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) * 255
    np.testing.assert_allclose(restored.permute(0, 2, 3, 1).numpy(), expected, atol=1e-3)


def test_unknown_explainer_refused_by_key():
    with pytest.raises(ValueError, match="explainer: unknown method 'deconvnet'"):
        explainer_factory("deconvnet")


def test_writes_faithfulness_and_sanity(split_data, hand_causal, hand_ratios, planted, tmp_path: Path):
    out = hand_run(tmp_path, Variant(), hand_ratios, hand_causal)
    step = step_options("faithfulness", n_images=8, batch_size=4)
    result = step.run(context(split_data(), tmp_path))
    assert set(result.tables) == {"faithfulness", "sanity"}
    assert result.files == [out / "faithfulness.csv", out / "sanity.csv"]
    written = pd.read_csv(out / "faithfulness.csv", keep_default_na=False)
    expected = faithfulness(hand_ratios, hand_causal, 0.5, planted)
    assert written["city"].tolist() == expected["city"].tolist() == ["pittsburgh", "tokyo"]
    assert written["spearman"].astype(float).tolist() == pytest.approx([-1.0, 1.0])
    assert written["causal_top"].tolist() == ["skyscraper; earth", "signboard; fence"]
    sanity = pd.read_csv(out / "sanity.csv")
    assert list(sanity.columns) == SANITY_COLUMNS
    assert sanity["step_name"].iloc[[0, -1]].tolist() == ["none", "full"]
    assert ((sanity["n_images"] + sanity["n_undefined"]) == 8).all()


def test_threshold_of_the_variant_and_sanity_off(split_data, hand_causal, hand_ratios, tmp_path: Path):
    variant = Variant(threshold=0.3)
    out = hand_run(tmp_path, variant, hand_ratios, hand_causal)
    result = step_options("faithfulness", sanity=False).run(context(split_data(), tmp_path, variant))
    assert list(result.tables) == ["faithfulness"] and not (out / "sanity.csv").exists()
    written = pd.read_csv(out / "faithfulness.csv")
    # at threshold 0.3 tokyo's R order (road > car > fence > signboard) is the reverse of the causal one
    assert written["threshold"].tolist() == [0.3] and written["city"].tolist() == ["tokyo"]
    assert written["spearman"].tolist() == pytest.approx([-1.0])


def test_without_causal_table_only_sanity_is_written(
    split_data, hand_ratios, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    variant = Variant(target="prediction")
    out = hand_run(tmp_path, variant, hand_ratios, None)
    step_options("faithfulness", n_images=4).run(context(split_data(), tmp_path, variant))
    assert "faithfulness skipped" in caplog.text and "causal.csv" in caplog.text
    assert not (out / "faithfulness.csv").exists() and (out / "sanity.csv").is_file()


def test_concept_rows_score_each_objects_best_concept(split_data, hand_causal, hand_ratios, tmp_path: Path):
    out = hand_run(tmp_path, Variant(), hand_ratios, hand_causal)
    rows = [
        ("tokyo", 0, 0.6, "signboard"),
        ("tokyo", 1, -0.3, "signboard"),  # the mean of signboard's concepts (0.15) would rank it below fence
        ("tokyo", 2, 0.4, "fence"),
        ("tokyo", 3, 0.1, "road"),
        ("tokyo", 4, 0.05, "sky"),
        ("tokyo", 5, -0.2, "car"),
        ("tokyo", 6, 0.9, None),  # matches no object: not ranked
        ("pittsburgh", 0, 0.9, None),
        ("pittsburgh", 1, 0.2, "skyscraper"),
    ]
    concepts = pd.DataFrame(rows, columns=["city", "concept", "importance", "object"])
    concepts.assign(
        importance_low=concepts["importance"] - 0.1, importance_high=concepts["importance"] + 0.1
    ).to_csv(tmp_path / "concepts.csv", index=False)
    step_options("faithfulness", sanity=False).run(context(split_data(), tmp_path))
    written = pd.read_csv(out / "faithfulness.csv", keep_default_na=False, na_values=[""])
    ratio = written[written["statistic"] == "ratio"]
    assert ratio["spearman"].tolist() == pytest.approx([-1.0, 1.0])  # the R rows as before
    concept = written[written["statistic"] == "concept"].set_index("city")
    # tokyo by concept: signboard .6 > fence .4 > road .1 > sky .05 > car -.2; by effect: sky .9 > signboard
    # .3 > fence .2 > car .1 > road 0: squared rank differences 1+1+4+9+1 = 16, rho = 1 - 6*16/(5*24) = 0.2.
    assert concept.at["tokyo", "spearman"] == pytest.approx(0.2)
    assert concept.at["tokyo", "n_objects"] == 5 and concept.at["tokyo", "k"] == 2
    assert concept.at["tokyo", "p_at_k"] == pytest.approx(0.5)
    assert concept.at["tokyo", "explained_top"] == "signboard; fence"
    assert concept.at["tokyo", "causal_top"] == "sky; signboard"
    assert np.isnan(concept.at["tokyo", "threshold"])
    assert concept.at["pittsburgh", "n_objects"] == 1 and np.isnan(concept.at["pittsburgh", "spearman"])


def test_faithfulness_runs_after_the_concepts_step():
    steps = [step_options("faithfulness"), step_options("concepts")]
    assert [s.name for s in ordered(steps)] == ["concepts", "faithfulness"]


def test_options_are_checked_naming_the_key():
    with pytest.raises(ConfigError, match="analysis.steps.faithfulness.default_k must be >= 1"):
        step_options("faithfulness", default_k=0)
    with pytest.raises(ConfigError, match="analysis.steps.faithfulness.n_images must be >= 1"):
        step_options("faithfulness", n_images=0)
    with pytest.raises(ConfigError, match="analysis.steps.faithfulness.k: not an option"):
        step_options("faithfulness", k=3)
