"""Checks on a composed config that fail before any training, naming the key at fault."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from citylens.models import ARCHITECTURES, build_model, resolve_target_layer
from citylens.pipeline.variant import Variant


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the dotted key."""


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


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first invalid value (unknown architecture, lr <= 0, missing path, ...)."""
    arch = _get(cfg, "model.arch")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}")
    if not _number(cfg, "model.lr") > 0:
        raise ConfigError(f"model.lr: learning rate must be positive, got {_get(cfg, 'model.lr')}")
    if _get(cfg, "analysis") is not None:
        analysis_variant(cfg)
    if _number(cfg, "data.batch_size") < 1:
        raise ConfigError(f"data.batch_size: must be >= 1, got {_get(cfg, 'data.batch_size')}")
    if _number(cfg, "data.input_size") < 16:
        raise ConfigError(f"data.input_size: must be >= 16, got {_get(cfg, 'data.input_size')}")
    if _get(cfg, "explainer.layer") is not None:
        _check_layer(str(arch), _get(cfg, "explainer.layer"), int(_number(cfg, "data.input_size")))
    for key in ("data.root", "data.pittsburgh_root", "data.tokyo_root"):
        if key.rsplit(".", 1)[1] in cfg.data.keys():
            if OmegaConf.is_missing(cfg.data, key.rsplit(".", 1)[1]):
                raise ConfigError(f"{key}: required; give the dataset folder, e.g. {key}=/path/to/data")
            path = Path(str(_get(cfg, key))).expanduser()
            if not path.is_dir():
                raise ConfigError(f"{key}: {path} does not exist or is not a directory")
    epochs = _get(cfg, "trainer.max_epochs")
    if epochs is not None and not (isinstance(epochs, int) and (epochs >= 1 or epochs == -1)):
        raise ConfigError(f"trainer.max_epochs: must be a positive integer (or -1), got {epochs!r}")
    if _get(cfg, "ckpt_path") and not Path(str(cfg.ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path: {cfg.ckpt_path} is not a checkpoint file")


def _check_layer(arch: str, spec: object, input_size: int) -> None:
    """explainer.layer must name a layer of `arch` that runs once and yields an (N, K, h, w) map, h*w > 1.

    The network is built on the meta device (no memory, no weights) and run once with a hook
    (docs/explainers.md, "Layers").
    """
    if not isinstance(spec, str):
        raise ConfigError(f"explainer.layer: expected a preset or a dotted path, got {spec!r}")
    with torch.device("meta"):
        network = build_model(arch, 2, input_size=input_size)[0]
        try:
            layer, path = resolve_target_layer(network, arch, spec)
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
