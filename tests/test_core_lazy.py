"""lazy_names: a package's names imported on first use, unknown names refused; wandb_loggers: only W&B's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pytorch_lightning import loggers as pl_loggers

import citylens.models
from citylens.core.lazy import lazy_names, wandb_loggers


class WandbLogger(pl_loggers.WandbLogger):
    """A W&B logger that starts no W&B run."""

    def __init__(self) -> None:  # no super().__init__: no run
        pass


class CSVLikeLogger:
    """Any other logger."""


def test_a_name_is_imported_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "lazy_heavy_mod.py").write_text("VALUE = 41 + 1\ndef double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_heavy_mod", raising=False)
    getattr_ = lazy_names("pkg", {"VALUE": "lazy_heavy_mod", "double": "lazy_heavy_mod"})
    assert "lazy_heavy_mod" not in sys.modules  # building the hook imports nothing
    assert getattr_("VALUE") == 42
    assert "lazy_heavy_mod" in sys.modules
    assert getattr_("double")(21) == 42
    assert getattr_("double") is sys.modules["lazy_heavy_mod"].double


def test_an_unknown_name_raises_attribute_error_naming_the_package():
    getattr_ = lazy_names("citylens.fake", {"sqrt": "math"})
    with pytest.raises(AttributeError, match="module 'citylens.fake' has no attribute 'cos'"):
        getattr_("cos")  # math has cos, but it is not one of the package's names


def test_the_models_package_resolves_its_names_and_refuses_others():
    from citylens.models.build import build_model
    from citylens.models.module import CityClassifier

    assert citylens.models.build_model is build_model
    assert citylens.models.CityClassifier is CityClassifier
    assert not hasattr(citylens.models, "PaperCNN")
    with pytest.raises(AttributeError, match="module 'citylens.models' has no attribute 'PaperCNN'"):
        citylens.models.PaperCNN  # noqa: B018


def test_wandb_loggers_keeps_only_wandb_loggers_in_order(tmp_path: Path):
    first, second, other = WandbLogger(), WandbLogger(), CSVLikeLogger()
    assert wandb_loggers([other, first, pl_loggers.CSVLogger(tmp_path), second]) == [first, second]
    kept = wandb_loggers([first, second])
    assert kept[0] is first and kept[1] is second
    assert wandb_loggers([other]) == []
    assert wandb_loggers([]) == [] and wandb_loggers(None) == []
