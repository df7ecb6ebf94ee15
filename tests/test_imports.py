"""The library layers import without the framework adapters (Lightning, Hydra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "citylens"
# Every module of the library layers (found on disk, so a new step cannot be forgotten here).
LIBRARY = sorted(
    ".".join(("citylens", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for package in ("analysis", "explain", "segment", "pipeline", "core")
    for path in (PACKAGE / package).rglob("*.py")
)


def test_library_layers_load_neither_lightning_nor_hydra():
    assert {"citylens.pipeline.runs", "citylens.pipeline.residuals_step", "citylens.analysis"} <= set(LIBRARY)
    code = (
        f"import sys\nimport {', '.join(LIBRARY)}\n"
        "frameworks = ('pytorch_lightning', 'lightning', 'hydra')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in frameworks))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_package_names_still_resolve():
    from citylens.data import FolderCityData
    from citylens.models import CityClassifier, build_model

    assert FolderCityData.__module__ == "citylens.data.datamodule"
    assert CityClassifier.__module__ == "citylens.models.module" and callable(build_model)


def test_figures_leave_the_notebook_backend_alone():
    code = (
        "import sys, matplotlib\n"
        "before = matplotlib.get_backend()\n"
        "import citylens.figures, citylens.report.sweep_figures\n"
        "print(before == matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    env = {**__import__("os").environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "False"]
