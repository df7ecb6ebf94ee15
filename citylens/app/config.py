"""Checks on a composed config that fail before any data work, naming the key at fault; recorded overrides.

`validate` covers everything checkable without data (values, paths, the accelerator, segmenter weights);
`preflight` checks the command line before Hydra composes it (launcher plugins, `resume=DIR`); `run_config`
rebuilds a run's config from its recorded overrides, validated, on citylens' own config files, so a run
folder is read as data and never as code (docs/faults.md).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from citylens.core.errors import ConfigError
from citylens.core.layers import ARCHITECTURES, resolve_target_layer
from citylens.explain.attribution import INPUT_LAYER
from citylens.models import build_model
from citylens.pipeline.steps import StepOptions
from citylens.pipeline.variant import Variant

__all__ = [
    "CONF_DIR",
    "ConfigError",
    "analysis_steps",
    "preflight",
    "run_config",
    "safe_overrides",
    "step_options",
    "validate",
]


def conf_dir() -> str:
    """The configs: citylens/conf inside an installed wheel, else the checkout's top-level conf/."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parent / "conf")


CONF_DIR = conf_dir()

# Launcher option -> the Hydra plugin module it needs (the `scale` extra).
LAUNCHER_PLUGINS = {
    "parallel": "hydra_plugins.hydra_joblib_launcher",
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "slurm_local": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}
# Overrides a run folder may not carry: they would name code to run or config files to read.
UNSAFE = re.compile(r"_(target|partial|args|recursive|convert)_|^[+~]*hydra[./]searchpath")


def _get(cfg: DictConfig, key: str) -> object:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _number(cfg: DictConfig, key: str) -> float:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def analysis_variant(cfg: DictConfig) -> Variant:
    """The run's analysis variant (explainer, layer, target, images, threshold), checked."""
    try:
        return Variant.from_dict(OmegaConf.to_container(cfg.analysis, resolve=True))
    except ValueError as err:
        raise ConfigError(str(err)) from err


def analysis_steps(cfg: DictConfig) -> list[StepOptions]:
    """The run's analysis steps, built from `analysis.steps.<name>` (null: switched off), each checked."""
    from hydra.utils import instantiate

    steps = []
    for name, conf in (_get(cfg, "analysis.steps") or {}).items():
        if conf is None:
            continue
        key = f"analysis.steps.{name}"
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ConfigError(f"{key}: not a step (no _target_); switch it off with {key}=null")
        try:
            step = instantiate(conf, _convert_="all")
        except Exception as err:  # Hydra wraps the dataclass's TypeError / ValueError: name the key
            cause = str(err.__cause__ or err)
            raise ConfigError(cause if cause.startswith(key) else f"{key}: {cause}") from err
        if not isinstance(step, StepOptions) or step.name != name:
            raise ConfigError(f"{key}: {conf._target_} is not the options of the {name!r} step")
        steps.append(step)
    return steps


def step_options(name: str, **changes: object) -> StepOptions:
    """One step's options with its defaults from conf/analysis/steps/<name>.yaml and `changes` applied
    (benchmarks, notebooks and tests build steps without composing a whole run config)."""
    path = Path(CONF_DIR) / "analysis" / "steps" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"analysis.steps.{name}: no such step (no {path.name} in conf/analysis/steps/)")
    conf = OmegaConf.load(path)
    for key, value in changes.items():
        if key not in conf:
            raise ConfigError(f"analysis.steps.{name}.{key}: not an option of the {name} step")
        conf[key] = value
    return analysis_steps(OmegaConf.create({"analysis": {"steps": {name: conf}}}))[0]


def _check_accelerator(cfg: DictConfig) -> None:
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto")
    devices = _get(cfg, "trainer.devices")
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(
                f"trainer.accelerator: {accelerator!r} but no CUDA GPU is visible here; use trainer=cpu"
            )
        if isinstance(devices, int) and devices > available:
            raise ConfigError(f"trainer.devices: {devices} requested, {available} GPU(s) visible")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator: 'mps' is not available here; use trainer=cpu")


def _check_segmenter(cfg: DictConfig) -> None:
    if _get(cfg, "analysis.steps.objects") is None or _get(cfg, "segmenter") is None:
        return
    from hydra.utils import get_class

    from citylens.segment import CsailSegmenter, SegformerSegmenter

    try:
        cls = get_class(str(_get(cfg, "segmenter._target_")))
    except Exception as err:
        raise ConfigError(f"segmenter._target_: {err}") from err
    if issubclass(cls, CsailSegmenter):
        for key in ("encoder_path", "decoder_path"):
            if OmegaConf.is_missing(cfg.segmenter, key):
                raise ConfigError(
                    f"segmenter.{key}: required; give the CSAIL {key.split('_')[0]}_epoch_N.pth"
                )
            path = Path(str(cfg.segmenter[key])).expanduser()
            if not path.is_file():
                raise ConfigError(f"segmenter.{key}: {path} is not a file (CSAIL weights missing)")
    elif issubclass(cls, SegformerSegmenter):
        from citylens.segment.segformer import resolve_model_dir

        try:
            resolve_model_dir(str(cfg.segmenter.model), _get(cfg, "segmenter.cache_dir"))
        except FileNotFoundError as err:
            raise ConfigError(f"segmenter.model: {str(err).splitlines()[0]}") from err


def _check_scene_explainer(cfg: DictConfig, variant: Variant) -> None:
    """An explainer that renders scenes (shapley_rendered) needs the synthetic generator (data=synthetic),
    told apart by class as the segmenters are."""
    from hydra.utils import get_class

    from citylens.data.datamodule import SyntheticCityData
    from citylens.explain.methods import EXPLAINERS

    if not getattr(EXPLAINERS[variant.explainer], "needs_scenes", False):
        return
    data = str(_get(cfg, "data._target_"))
    try:
        synthetic = issubclass(get_class(data), SyntheticCityData)
    except Exception as err:
        raise ConfigError(f"data._target_: {err}") from err
    if not synthetic:
        raise ConfigError(
            f"explainer: {variant.explainer} renders coalitions of objects with the synthetic generator; "
            f"data {data} has none (use data=synthetic, or explainer=shapley for pixel fills)"
        )


def _check_loggers(cfg: DictConfig) -> None:
    """Every logger entry names its class: an entry without `_target_` holds keys set for a logger that the
    chosen `logger=` option does not include (e.g. `logger.wandb.mode=online` with `logger=csv`)."""
    for name, conf in (_get(cfg, "logger") or {}).items():
        if conf is not None and (not isinstance(conf, DictConfig) or "_target_" not in conf):
            keys = sorted(conf.keys()) if isinstance(conf, DictConfig) else conf
            raise ConfigError(
                f"logger.{name}: not a logger of the chosen `logger=` option (it holds only {keys}); "
                f"choose logger={name} (or a logger option that includes it), or drop these keys"
            )


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid value (unknown architecture, lr <= 0, missing path, no GPU)."""
    arch = _get(cfg, "model.arch")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}")
    if not _number(cfg, "model.lr") > 0:
        raise ConfigError(f"model.lr: learning rate must be positive, got {_get(cfg, 'model.lr')}")
    variant = analysis_variant(cfg) if _get(cfg, "analysis") is not None else None
    if _number(cfg, "data.batch_size") < 1:
        raise ConfigError(f"data.batch_size: must be >= 1, got {_get(cfg, 'data.batch_size')}")
    if _number(cfg, "data.input_size") < 16:
        raise ConfigError(f"data.input_size: must be >= 16, got {_get(cfg, 'data.input_size')}")
    if _get(cfg, "explainer.layer") is not None and not (variant and variant.layer == INPUT_LAYER):
        _check_layer(str(arch), _get(cfg, "explainer.layer"), int(_number(cfg, "data.input_size")))
    for key in ("data.root", "data.pittsburgh_root", "data.tokyo_root"):
        if key.rsplit(".", 1)[1] in cfg.data.keys():
            if OmegaConf.is_missing(cfg.data, key.rsplit(".", 1)[1]):
                raise ConfigError(f"{key}: required; give the dataset folder, e.g. {key}=/path/to/data")
            value = _get(cfg, key)
            if value is None or not str(value).strip():
                raise ConfigError(f"{key}: empty; give the dataset folder, e.g. {key}=/path/to/data")
            path = Path(str(value)).expanduser()
            if not path.is_dir():
                raise ConfigError(f"{key}: {path} does not exist or is not a directory")
    epochs = _get(cfg, "trainer.max_epochs")
    if epochs is not None and not (isinstance(epochs, int) and (epochs >= 1 or epochs == -1)):
        raise ConfigError(f"trainer.max_epochs: must be a positive integer (or -1), got {epochs!r}")
    reuse = _get(cfg, "reuse_freed_memory")
    if not isinstance(reuse, bool | None):
        raise ConfigError(f"reuse_freed_memory: expected true or false, got {reuse!r}")
    if _get(cfg, "ckpt_path") and not Path(str(cfg.ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path: {cfg.ckpt_path} is not a checkpoint file")
    if variant is not None:
        analysis_steps(cfg)
        _check_scene_explainer(cfg, variant)
    _check_loggers(cfg)
    _check_accelerator(cfg)
    _check_segmenter(cfg)


def safe_overrides(overrides: object, source: Path) -> list[str]:
    """Recorded overrides as strings, refusing any that name code (`_target_`) or config search paths."""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{source}: expected a list of override strings")
    for override in overrides:
        if UNSAFE.search(override):
            raise ConfigError(f"{source}: refusing override {override!r} (a run folder may not name code)")
    return list(overrides)


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """A run's config composed again from citylens' own config files and the run's recorded overrides
    (validated by safe_overrides) with `overrides` appended; the run dir stays the same."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: not a citylens run dir (no .hydra/overrides.yaml)")
    try:
        original = safe_overrides(yaml.safe_load(saved.read_text()) or [], saved)
    except yaml.YAMLError as err:
        raise ConfigError(f"{saved}: not valid YAML ({err})") from err
    composed = [*original, *overrides, f"paths.run_dir={run_dir}"]
    if GlobalHydra.instance().is_initialized():  # inside citylens-train (the sweep report): its own configs
        return compose("train", overrides=composed)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=composed)


def extra_variant_overrides(entry: object, i: int) -> list[str]:
    """One `extra_variants` entry as overrides: an explainer name (`layercam`) or overrides separated by
    spaces (`explainer=ig analysis.threshold=0.3`)."""
    words = str(entry).split() if isinstance(entry, str) else []
    if not words:
        raise ConfigError(f"extra_variants[{i}]: must be an explainer name or overrides, got {entry!r}")
    return [w if "=" in w else f"explainer={w}" for w in words]


def extra_variant_configs(cfg: DictConfig, run_dir: Path) -> list[DictConfig]:
    """The run's config once per entry of `extra_variants`: composed again from the run's recorded
    overrides and the entry's, with the causal step off (causal.csv is the run's, not the variant's). Each
    is validated, so a bad entry fails before training starts."""
    entries = cfg.get("extra_variants") or []
    if not isinstance(entries, ListConfig | list):
        raise ConfigError(f"extra_variants: must be a list, e.g. [layercam], got {entries!r}")
    configs = []
    for i, entry in enumerate(entries):
        overrides = extra_variant_overrides(entry, i)
        try:
            extra = run_config(run_dir, [*overrides, "analysis.steps.causal=null", "extra_variants=[]"])
        except ConfigError:
            raise
        except Exception as err:  # Hydra's errors name the override; say which entry held it
            raise ConfigError(f"extra_variants[{i}]: {err}") from err
        validate(extra)
        configs.append(extra)
    return configs


def resume_args(target: Path) -> list[str]:
    """The command line that reruns a sweep (multirun.yaml) or a run (.hydra/overrides.yaml) in place."""
    if (target / "multirun.yaml").is_file():
        saved = target / "multirun.yaml"
        recorded = OmegaConf.load(saved)
        task = safe_overrides(
            list(OmegaConf.select(recorded, "hydra.overrides.task", default=[]) or []), saved
        )
        launcher = [
            o
            for o in safe_overrides(
                list(OmegaConf.select(recorded, "hydra.overrides.hydra", default=[]) or []), saved
            )
            if o.split("=", 1)[0] not in ("hydra.sweep.dir", "hydra.mode")
        ]
        return ["-m", *task, *launcher, f"hydra.sweep.dir={target}"]
    saved = target / ".hydra" / "overrides.yaml"
    if saved.is_file():
        return [*safe_overrides(yaml.safe_load(saved.read_text()) or [], saved), f"hydra.run.dir={target}"]
    raise ConfigError(f"resume={target}: not a citylens sweep or run folder (no multirun.yaml or .hydra/)")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def preflight(argv: list[str]) -> list[str]:
    """Check the command line before Hydra composes it; expand `resume=DIR` into the resuming command and
    `data.cities={...}` into the overrides that replace the city set."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "resume":
            out += resume_args(Path(value).expanduser())
            continue
        if key == "data.cities":
            # Hydra merges a dict into the existing city set (and refuses new keys); a city set replaces it.
            out += ["~data.cities", f"+data.cities={value}"]
            continue
        module = LAUNCHER_PLUGINS.get(value) if key.lstrip("+~") == "hydra/launcher" else None
        if module and not _importable(module):
            raise ConfigError(
                f"hydra/launcher={value}: the Hydra plugin {module.split('.')[1]} is not installed; "
                "install the scale extra: pip install -e .[scale]"
            )
        out.append(arg)
    return out


def _check_layer(arch: str, spec: object, input_size: int) -> None:
    """explainer.layer must name a layer of `arch` that runs once and yields an (N, K, h, w) map, h*w > 1.

    The network is built on the meta device (no memory, no weights) and run once with a hook
    (docs/explainers.md, "Layers").
    """
    if not isinstance(spec, str):
        raise ConfigError(f"explainer.layer: expected a preset or a dotted path, got {spec!r}")
    with torch.device("meta"):
        network = build_model(arch, 2, input_size=input_size)
        try:
            layer, path = resolve_target_layer(network, spec)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        shapes: list[tuple[int, ...]] = []

        def record(module: nn.Module, inputs: object, output: object) -> None:
            shapes.append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())

        handle = layer.register_forward_hook(record)
        try:
            network.eval()(torch.zeros(1, 3, input_size, input_size))
        finally:
            handle.remove()
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ConfigError(
            f"explainer.layer: {spec!r} ({path}) of {arch} must run once and give an (N, K, h, w) map; "
            f"it ran {len(shapes)} times with output shapes {shapes}"
        )
    if shapes[0][-2:] == (1, 1):
        raise ConfigError(
            f"explainer.layer: {spec!r} ({path}) of {arch} gives a 1x1 map at data.input_size={input_size}, "
            "so every mask would be all zeros; pick an earlier layer or a larger input"
        )
