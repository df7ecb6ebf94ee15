"""FaithfulnessCallback on a hand-made run folder and a tiny in-memory test split."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from citylens.analysis.faithfulness import faithfulness
from citylens.analysis.sanity import SANITY_COLUMNS
from citylens.callbacks.faithfulness import FaithfulnessCallback
from citylens.models.build import build_model
from citylens.pipeline import Variant
from citylens.pipeline.faithfulness_step import explainer_factory


@pytest.fixture
def module() -> SimpleNamespace:
    torch.manual_seed(0)
    network, layer = build_model("simple", 2, input_size=32)
    return SimpleNamespace(network=network, target_layer=layer, hparams=SimpleNamespace(arch="simple"))


def test_writes_faithfulness_and_sanity(
    split_data, hand_causal, hand_ratios, planted, tmp_path: Path, module: SimpleNamespace
):
    out = Variant().dir(tmp_path)
    out.mkdir(parents=True)
    hand_ratios.to_csv(out / "object_ratios.csv", index=False)
    hand_causal.to_csv(tmp_path / "causal.csv", index=False)
    FaithfulnessCallback(Variant(), n_images=8, batch_size=4).analyse(module, split_data(), tmp_path, [])
    written = pd.read_csv(out / "faithfulness.csv", keep_default_na=False)
    expected = faithfulness(hand_ratios, hand_causal, 0.5, planted)
    assert written["city"].tolist() == expected["city"].tolist() == ["pittsburgh", "tokyo"]
    assert written["spearman"].astype(float).tolist() == pytest.approx([-1.0, 1.0])
    assert written["causal_top"].tolist() == ["skyscraper; earth", "signboard; fence"]
    sanity = pd.read_csv(out / "sanity.csv")
    assert list(sanity.columns) == SANITY_COLUMNS
    assert sanity["step_name"].iloc[[0, -1]].tolist() == ["none", "full"]
    assert ((sanity["n_images"] + sanity["n_undefined"]) == 8).all()


def test_without_causal_table_only_sanity_is_written(
    split_data, hand_ratios, tmp_path: Path, module: SimpleNamespace, caplog: pytest.LogCaptureFixture
):
    variant = Variant(target="prediction")
    out = variant.dir(tmp_path)
    out.mkdir(parents=True)
    hand_ratios.to_csv(out / "object_ratios.csv", index=False)
    FaithfulnessCallback(variant, n_images=4).analyse(module, split_data(), tmp_path, [])
    assert "faithfulness skipped" in caplog.text and "causal.csv" in caplog.text
    assert not (out / "faithfulness.csv").exists() and (out / "sanity.csv").is_file()


def test_bad_settings_are_refused_by_key():
    with pytest.raises(ValueError, match="callbacks.faithfulness.default_k"):
        FaithfulnessCallback(Variant(), default_k=0)
    with pytest.raises(ValueError, match="callbacks.faithfulness.n_images"):
        FaithfulnessCallback(Variant(), n_images=0)
    assert explainer_factory("gradcam") is not None


def test_config_entry_instantiates(compose_cfg, tmp_path: Path):
    cfg = compose_cfg(["analysis.threshold=0.3"], tmp_path, tmp_path)
    callback = instantiate(cfg.callbacks.faithfulness)
    assert isinstance(callback, FaithfulnessCallback)
    assert callback.variant == Variant(threshold=0.3) and callback.options.n_images == 64
