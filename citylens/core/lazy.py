"""Package names loaded on first use (PEP 562), so importing a light module never drags in a heavy sibling."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package` that imports `where[name]` when `name` is first used."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__


def wandb_loggers(loggers: list[Any]) -> list[Any]:
    """The W&B loggers among `loggers` (Lightning's logger class is imported here, on first use, not at the
    import of citylens; wandb itself only when a logger uses it)."""
    if not loggers:
        return []
    from pytorch_lightning.loggers import WandbLogger

    return [logger for logger in loggers if isinstance(logger, WandbLogger)]
