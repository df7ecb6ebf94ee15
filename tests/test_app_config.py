"""Config composition of every group option, and bad values refused before training with the key named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from citylens.app.config import ConfigError, validate

# conf/, read at collection time for the parametrisations below (a fixture cannot feed parametrize).
CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in (
        "data",
        "model",
        "trainer",
        "logger",
        "callbacks",
        "analysis",
        "paths",
        "experiment",
        "explainer",
    )
}


def test_every_group_has_the_required_options():
    assert {"vgg11", "resnet18", "simple", "simpler"} <= set(GROUPS["model"])
    assert {"default", "cpu", "gpu"} <= set(GROUPS["trainer"])
    assert {"wandb", "csv", "none"} <= set(GROUPS["logger"])
    assert {"smoke", "demo", "paper"} <= set(GROUPS["experiment"])
    assert "synthetic" in GROUPS["data"]
    assert set(GROUPS["explainer"]) == {"gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"} | {
        "ig", "ixg", "smoothgrad", "occlusion", "shapley", "shapley_rendered"
    }  # fmt: skip


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(compose_cfg, group: str, option: str, tmp_path: Path):
    overrides = [f"{group}={option}"]
    if option == "folder":
        overrides.append(f"data.root={tmp_path}")
    if option == "pitts_tokyo":
        overrides += [f"data.pittsburgh_root={tmp_path}", f"data.tokyo_root={tmp_path}"]
    cfg = compose_cfg(overrides, tmp_path, tmp_path)
    assert cfg.model.arch in ("vgg11", "resnet18", "simple", "simpler")
    if group == "model":
        assert cfg.model.arch == option
    if group in ("model", "trainer", "logger", "callbacks", "explainer") and option != "none":
        if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="^trainer.accelerator: 'gpu' but no CUDA GPU"):
                validate(cfg)
        else:
            validate(cfg)


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "simple", "simpler"])
def test_model_configs_instantiate_the_named_architecture(compose_cfg, arch: str, tmp_path: Path):
    cfg = compose_cfg([f"model={arch}", "data.input_size=64"], tmp_path, tmp_path)
    model = instantiate(cfg.model, num_classes=3)
    assert model.hparams.arch == arch and model.hparams.lr == 1e-4
    assert model.network(__import__("torch").zeros(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("name", ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"])
def test_explainer_configs_instantiate_the_named_method_at_the_layer(compose_cfg, name: str, tmp_path: Path):
    from citylens.explain import EXPLAINERS, build_explainer

    cfg = compose_cfg(
        [f"explainer={name}", "explainer.layer=last_conv", "model=simple", "data.input_size=64"],
        tmp_path,
        tmp_path,
    )
    validate(cfg)
    network = instantiate(cfg.model, num_classes=2).network
    assert cfg.explainer.name == cfg.analysis.explainer == name  # built by name from the registry
    explainer = build_explainer(cfg.explainer.name, network, cfg.explainer.layer)
    assert type(explainer) is EXPLAINERS[name]
    assert explainer.target_layer is network.features[-2] and explainer.layer_path == "features.-2"
    assert compose_cfg([], tmp_path, tmp_path).explainer.layer == "last_block"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=vgg11", "explainer.layer=layer3"], "preset 'layer3' is not available here: vgg11 has"),
        (["model=simple", "explainer.layer=last_cnv"], "'last_cnv' is neither the presets for simple"),
        (["model=resnet18", "explainer.layer=layer4.1.relu"], r"\(layer4.1.relu\) of resnet18 must run once"),
        (["model=resnet18", "explainer.layer=avgpool"], "gives a 1x1 map at data.input_size=64"),
        (["model=vgg11", "data.input_size=32"], "'last_block' \\(features.-1\\) of vgg11 gives a 1x1 map"),
        (["model=resnet18", "explainer.layer=fc"], "must run once and give an \\(N, K, h, w\\) map"),
    ],
)
def test_bad_explainer_layers_are_refused_before_training(
    compose_cfg, overrides: list[str], message: str, tmp_path: Path
):
    cfg = compose_cfg(["data.input_size=64", *overrides], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=f"^explainer.layer: .*{message}"):
        validate(cfg)


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.arch=alexnet", "model.arch"),
        ("model.lr=0", "model.lr"),
        ("model.lr=-0.1", "model.lr"),
        ("analysis.threshold=1.5", "analysis.threshold"),
        ("analysis.target=both", "analysis.target"),
        ("analysis.images=some", "analysis.images"),
        ("explainer.name=os.system", "explainer"),
        ("analysis.steps.explain.batch_size=0", "analysis.steps.explain.batch_size"),
        ("analysis.steps.causal.fill=paint", "analysis.steps.causal.fill"),
        ("+analysis.steps.objects.n_bootstrap=5", "analysis.steps.objects"),
        (
            "analysis.steps.residuals._target_=citylens.pipeline.objects_step.ObjectsOptions",
            "analysis.steps.residuals",
        ),
        ("data.batch_size=0", "data.batch_size"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("reuse_freed_memory=sometimes", "reuse_freed_memory"),
    ],
)
def test_bad_values_are_refused_naming_the_key(compose_cfg, override: str, key: str, tmp_path: Path):
    cfg = compose_cfg([override], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=f"^{key}:"):
        validate(cfg)


def test_steps_come_from_their_yaml_and_null_switches_one_off(compose_cfg, tmp_path: Path):
    from citylens.app.config import analysis_steps, step_options

    steps = analysis_steps(compose_cfg(["analysis.steps.causal=null"], tmp_path, tmp_path))
    assert [s.name for s in steps] == ["explain", "objects", "residuals", "faithfulness", "concepts"]
    assert steps[0] == step_options("explain") and steps[0].batch_size == 64
    steps = analysis_steps(compose_cfg(["analysis.steps.objects.n_boot=7"], tmp_path, tmp_path))
    assert [s.n_boot for s in steps if s.name == "objects"] == [7]


def test_missing_data_path_is_refused(compose_cfg, tmp_path: Path):
    cfg = compose_cfg(["data=folder", f"data.root={tmp_path / 'nowhere'}"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="^data.root: .*nowhere"):
        validate(cfg)
    cfg = compose_cfg(["data=folder"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="^data.root: required"):
        validate(cfg)


def test_cli_refuses_a_bad_value_before_training(tmp_path: Path):
    env = {**os.environ, "CITYLENS_OUTPUTS": str(tmp_path / "out"), "CITYLENS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "citylens.app.train", "experiment=smoke", "model.lr=-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "model.lr" in proc.stdout + proc.stderr
    assert not (tmp_path / "cache").exists()


def test_the_paper_synthetic_preset_is_the_demo_at_224_px(compose_cfg, tmp_path: Path):
    """experiment=paper_synthetic: the demo's data, budget and variants at 224 px; ResNet18, Simple x 2."""
    demo = compose_cfg(["experiment=demo", "logger=csv", "model=simple"], tmp_path, tmp_path)
    paper = compose_cfg(["experiment=paper_synthetic", "logger=csv", "model=simple"], tmp_path, tmp_path)
    validate(paper)
    assert paper.data.input_size == 224 and demo.data.input_size == 64
    assert paper.data.images_per_city == demo.data.images_per_city == 700
    assert paper.trainer.max_epochs == demo.trainer.max_epochs == 6
    assert list(paper.extra_variants) == list(demo.extra_variants) == ["occlusion"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        hydra = compose("train", overrides=["experiment=paper_synthetic"], return_hydra_config=True).hydra
    assert dict(hydra.sweeper.params) == {"model": "resnet18,simple", "seed": "0,1"}


def test_logger_keys_without_their_logger_are_refused(compose_cfg, tmp_path: Path):
    """Keys set for a logger the chosen `logger=` option does not include leave an entry with no class."""
    cfg = compose_cfg(["logger=csv", "+logger.wandb.mode=online"], tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=r"^logger.wandb: not a logger .*\['mode'\].*choose logger=wandb"):
        validate(cfg)
    validate(compose_cfg(["experiment=demo", "logger=csv"], tmp_path, tmp_path))
    assert compose_cfg(["logger=wandb"], tmp_path, tmp_path).logger.wandb.log_model is False


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["explainer=ig", "explainer.options.baseline=white"], "explainer.options.baseline"),
        (["explainer=ig", "explainer.options.n_steps=0"], "explainer.options.n_steps"),
        (["explainer=smoothgrad", "explainer.options.stdev=0"], "explainer.options.stdev"),
        (["explainer=shapley", "explainer.options.n_samples=0"], "explainer.options.n_samples"),
        (["explainer=occlusion", "explainer.options.fill=zero"], "explainer.options.fill"),
        (["explainer=ig", "explainer.layer=last_block"], "explainer.layer"),
        (["explainer=ig", "+explainer.options.steps=3"], "explainer.options: unknown key"),
    ],
)
def test_bad_attribution_options_are_refused_naming_the_key(compose_cfg, overrides, key: str, tmp_path: Path):
    cfg = compose_cfg(overrides, tmp_path, tmp_path)
    with pytest.raises(ConfigError, match=f"^{key}"):
        validate(cfg)


def test_attribution_configs_give_the_variant_its_options(compose_cfg, tmp_path: Path):
    from citylens.app.config import analysis_variant

    cfg = compose_cfg(["explainer=ig", "explainer.options.baseline=blur"], tmp_path, tmp_path)
    variant = analysis_variant(cfg)
    assert variant.explainer == "ig" and variant.layer == "input"
    assert dict(variant.options) == {"baseline": "blur", "n_steps": 16, "blur_sigma": 0.1}
    assert variant.name == "ig_baseline_blur-input-label-all-t0.5"
    assert analysis_variant(compose_cfg([], tmp_path, tmp_path)).options == ()
