"""Explainers by name: the registry the configs, the analysis variants and `build_explainer` share."""

from __future__ import annotations

from torch import nn

from citylens.explain.gradcam import GradCAM

EXPLAINERS: dict[str, type] = {"gradcam": GradCAM}


def explainer_name(name_or_class_path: str) -> str:
    """The registered name of an explainer given by name or by the class path of its config's `_target_`."""
    if name_or_class_path in EXPLAINERS:
        return name_or_class_path
    by_path = {f"{cls.__module__}.{cls.__name__}": n for n, cls in EXPLAINERS.items()}
    by_path.update({f"citylens.explain.{cls.__name__}": n for n, cls in EXPLAINERS.items()})
    if name_or_class_path in by_path:
        return by_path[name_or_class_path]
    raise ValueError(f"explainer: unknown explainer {name_or_class_path!r}; choose one of {list(EXPLAINERS)}")


def build_explainer(name: str, network: nn.Module, layer: nn.Module) -> GradCAM:
    """The explainer `name` of `network` at the target layer module `layer`."""
    return EXPLAINERS[explainer_name(name)](network, layer)
