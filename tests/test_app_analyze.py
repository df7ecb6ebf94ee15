"""The after-fit analysis of one real run (mask store, t-SNE, figures, label maps, ratios) and its re-analysis
by citylens-analyze."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from citylens.analysis.ratios import object_ratios
from citylens.app.analyze import analyze
from citylens.app.train import train
from citylens.core.view import to_input
from citylens.explain import GradCAM, upsample_masks
from citylens.explain.store import StoreError, open_store
from citylens.models import CityClassifier
from citylens.pipeline import Variant, list_variants
from citylens.segment import GroundTruthSegmenter

DEFAULT = Variant()


@pytest.fixture(scope="module")
def run(compose_cfg, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("explain_run")
    cfg = compose_cfg(
        [
            "experiment=smoke",
            "model=simple",
            "callbacks.progress_bar=null",
            "analysis.steps.explain.thumbnails=20",
        ],
        root / "run",
        root / "cache",
    )
    result = train(cfg)
    overrides = root / "run" / ".hydra"
    overrides.mkdir()
    (overrides / "overrides.yaml").write_text(
        "- experiment=smoke\n- model=simple\n- callbacks.progress_bar=null\n"
        "- analysis.steps.explain.thumbnails=20\n"
        f"- paths.cache_dir={root / 'cache'}\n"
    )
    return {**result, "run_dir": root / "run", "cache": root / "cache", "out": DEFAULT.dir(root / "run")}


def test_run_writes_every_artefact(run: dict):
    run_dir, out = run["run_dir"], run["out"]
    assert out == run_dir / "analysis" / "gradcam-last_block-label-all-t0.5"
    for name in ("metrics.json", "split.csv", "causal.csv", "causal_agreement.csv"):
        assert (run_dir / name).is_file(), name
    for name in ("tsne.csv", "object_ratios.csv", "ratio_summary.csv", "recovery.csv"):
        assert (out / name).is_file(), name
    for fig in ("fig3_tsne", "fig4_explanations", "fig5_ratios", "fig6_examples"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000
    assert json.loads((run_dir / "metrics.json").read_text())["variant"] == DEFAULT.name


def test_store_holds_the_test_split_in_order_with_provenance(run: dict):
    store = open_store(run["out"])
    rows = list(csv.DictReader(open(run["run_dir"] / "split.csv")))
    assert store.image_ids == [r["image_id"] for r in rows if r["split"] == "test"]
    assert store.cities == [r["city"] for r in rows if r["split"] == "test"]
    meta = store.meta
    assert meta["arch"] == "simple" and meta["seed"] == 0 and meta["input_size"] == 64
    assert meta["target_layer"] == "features.-1" and meta["checkpoint"].endswith("best.ckpt")
    assert meta["explainer"] == "gradcam" and meta["target"] == "label" and meta["variant"] == DEFAULT.name
    assert meta["dataset_fingerprint"] == run["datamodule"].fingerprint
    assert meta["dataset"]["planted"]["tokyo"] == ["fence", "signboard"]
    assert meta["split_seed"] == run["datamodule"].split_seed
    assert meta["split_settings"] == {
        "fractions": [0.6, 0.2, 0.2],
        "by": "place",
        "balance": False,
        "balance_seed": 0,
    }
    assert store.places == [r.place for r in run["datamodule"].splits["test"]]
    assert np.allclose(store.probs.sum(1), 1, atol=1e-5)
    tsne = pd.read_csv(run["out"] / "tsne.csv")
    assert tsne["image_id"].tolist() == store.image_ids and np.isfinite(tsne[["x", "y"]].to_numpy()).all()
    assert tsne["predicted"].tolist() == [run["datamodule"].cities[i] for i in store.preds]
    np.testing.assert_allclose(tsne["probability"], store.probs.max(1), rtol=1e-6)


def test_stored_masks_explain_the_true_city_of_the_best_checkpoint(run: dict):
    store = open_store(run["out"])
    module = CityClassifier.load_from_checkpoint(store.meta["checkpoint"], map_location="cpu")
    dm = run["datamodule"]
    _, views, _ = next(dm.split_view("test").batches(len(store)))
    cam = GradCAM(module.network, "last_block")
    expected = cam(to_input(views), store.targets)
    # At least one image is misclassified or the masks of the two cities differ: the target matters.
    other = cam(to_input(views), 1 - store.targets)
    assert not torch.equal(expected, other)
    masks = store.masks()
    assert masks.shape == (len(store), 64, 64)
    torch.testing.assert_close(masks, expected, rtol=0, atol=0)
    chunked = torch.cat([m for _, m in store.chunks(5)])
    torch.testing.assert_close(chunked, masks, rtol=0, atol=0)


def test_object_ratios_match_the_library_function(run: dict):
    store = open_store(run["out"])
    dm = run["datamodule"]
    labels = np.stack([GroundTruthSegmenter(64).load(r) for r in dm.splits["test"]])
    expected = object_ratios(
        store.masks().numpy(), labels, store.cities, [0.3, 0.5, 0.7], min_mean_pixels=100 * (64 / 224) ** 2
    )
    written = pd.read_csv(run["out"] / "object_ratios.csv")
    assert len(written) == len(expected)
    np.testing.assert_allclose(written["ratio"], expected["ratio"])
    assert written["explained_pixels"].tolist() == expected["explained_pixels"].tolist()
    kept = written[written["kept"]]
    assert ((kept["ci_low"] <= kept["ratio"] + 1e-12) & (kept["ratio"] <= kept["ci_high"] + 1e-12)).all()
    assert np.isfinite(kept[["ci_low", "ci_high"]].to_numpy()).all()
    recovery = pd.read_csv(run["out"] / "recovery.csv")
    assert set(recovery["city"]) == {"tokyo", "pittsburgh"} and set(recovery["k"]) == {2}


def test_analyze_writes_a_new_variant_beside_the_first_and_reuses_label_maps(
    run: dict, caplog: pytest.LogCaptureFixture
):
    first = (run["out"] / "object_ratios.csv").read_bytes()
    with caplog.at_level(logging.INFO):
        analyze(run["run_dir"], ["analysis.threshold=0.2", "analysis.steps.objects.extra_thresholds=[]"])
    new = Variant(threshold=0.2).dir(run["run_dir"])
    written = pd.read_csv(new / "object_ratios.csv")
    assert sorted(written["threshold"].unique()) == [0.2]
    assert open_store(new).meta["checkpoint"].endswith("best.ckpt")
    assert (run["out"] / "object_ratios.csv").read_bytes() == first
    assert list_variants(run["run_dir"]) == sorted([DEFAULT.name, Variant(threshold=0.2).name])
    assert "label-map cache hit" in caplog.text
    assert "building label-map cache" not in caplog.text


def test_correct_images_only_restricts_the_ratios(run: dict):
    analyze(run["run_dir"], ["analysis.images=correct", "analysis.target=prediction"])
    variant = Variant(target="prediction", images="correct")
    store = open_store(variant.dir(run["run_dir"]))
    correct = store.preds == store.targets
    dm = run["datamodule"]
    labels = np.stack([GroundTruthSegmenter(64).load(r) for r in dm.splits["test"]])[correct]
    expected = object_ratios(
        store.masks().numpy()[correct],
        labels,
        list(np.asarray(store.cities)[correct]),
        [0.3, 0.5, 0.7],
        min_mean_pixels=100 * (64 / 224) ** 2,
    )
    written = pd.read_csv(variant.dir(run["run_dir"]) / "object_ratios.csv")
    np.testing.assert_allclose(written["ratio"], expected["ratio"])


def test_analyze_against_another_split_is_refused_naming_the_first_differing_image(run: dict):
    store = open_store(run["out"])
    before = (run["out"] / "object_ratios.csv").read_text()
    with pytest.raises(
        StoreError, match=r"label maps do not cover the store's test images.*first difference at image"
    ):
        analyze(run["run_dir"], ["data.split_seed=1", "analysis.steps.explain=null"])
    assert open_store(run["out"]).image_ids == store.image_ids
    assert (run["out"] / "object_ratios.csv").read_text() == before


def test_analyze_refuses_a_bad_threshold(run: dict):
    from citylens.app.config import ConfigError

    with pytest.raises(ConfigError, match="analysis.threshold"):
        analyze(run["run_dir"], ["analysis.threshold=-0.1"])


@pytest.mark.parametrize(
    "name,options",
    [
        ("ig", ["explainer.options.n_steps=4"]),
        ("ixg", []),
        ("smoothgrad", ["explainer.options.nt_samples=2"]),
        ("occlusion", []),
        pytest.param("shapley", ["explainer.options.n_samples=2"], marks=pytest.mark.slow),
        ("shapley_rendered", ["explainer.options.max_exact=4"]),
    ],
)
def test_analyze_runs_every_attribution_explainer_into_its_variant(run: dict, name: str, options: list[str]):
    overrides = [f"explainer={name}", *options, "analysis.steps.faithfulness.n_images=8"]
    analyze(run["run_dir"], overrides)
    given = {o.split("=")[0].rsplit(".", 1)[1]: int(o.split("=")[1]) for o in options}
    variant = Variant(name, "input", options=given)
    out = variant.dir(run["run_dir"])
    store = open_store(out)
    assert store.meta["explainer"] == name and store.meta.get("options", {}) == dict(variant.options)
    maps = store.maps()
    assert maps.shape == (len(store), 64, 64) and (maps < 0).any() and (maps > 0).any()
    torch.testing.assert_close(store.masks(), upsample_masks(maps, 64).clamp(0, 1), rtol=0, atol=0)
    attribution = pd.read_csv(out / "object_attribution.csv")
    assert list(attribution.columns[:7]) == [
        "city", "object", "object_id", "n_images", "attribution", "ci_low", "ci_high"
    ]  # fmt: skip
    kept = attribution[attribution["kept"]]
    assert len(kept) and np.isfinite(kept[["attribution", "ci_low", "ci_high"]].to_numpy()).all()
    assert (
        (kept["ci_low"] <= kept["attribution"] + 1e-9) & (kept["attribution"] <= kept["ci_high"] + 1e-9)
    ).all()
    scores = pd.read_csv(out / "faithfulness.csv")
    # the run's concepts (the concepts step ran before faithfulness) are scored in every variant's file
    assert set(scores["statistic"]) == {"ratio", "attribution", "concept"}
    assert scores[scores["statistic"] != "ratio"]["threshold"].isna().all()
    assert (out / "object_ratios.csv").is_file() and (out / "figures" / "fig5_ratios.png").is_file()
    assert (out / "sanity.csv").is_file() == (name in ("ig", "ixg", "smoothgrad"))
    # The CAM variant of the same run keeps what it wrote: no attribution table, R and the same concept rows.
    assert not (run["out"] / "object_attribution.csv").exists()
    cam = pd.read_csv(run["out"] / "faithfulness.csv")
    assert set(cam["statistic"]) == {"ratio", "concept"}
    columns = ["city", "method", "n_objects", "spearman", "p_at_k", "explained_top"]
    pd.testing.assert_frame_equal(
        cam[cam["statistic"] == "concept"][columns].reset_index(drop=True),
        scores[scores["statistic"] == "concept"][columns].reset_index(drop=True),
    )
