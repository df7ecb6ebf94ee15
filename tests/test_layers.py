"""The package's imports run one way: down the layer table, never between the level-1 packages, no cycle.
And no test file imports another test file or conftest: shared helpers are fixtures of tests/conftest.py.

Parsed with ast (every import statement, also those inside functions), so nothing is imported to check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "citylens"

# Ground up. A key is a dotted module path below `citylens`; the longest matching prefix gives a module's
# level. Level 1 packages import the core only, never each other; elsewhere a module may import its own
# level (the adapters call each other: analyze -> train, callbacks -> config, the report CLI -> run_views).
LAYERS: dict[str, int] = {
    "": 0,  # citylens/__init__.py: the version
    "core": 0,
    "data": 1,
    "models": 1,
    "explain": 1,
    "segment": 1,
    "analysis": 2,
    "figures": 2,
    "pipeline": 3,
    "report": 4,
    "app": 5,
    "app.train": 6,
    "app.analyze": 6,
}


def module_names(root: Path) -> dict[str, Path]:
    """Dotted names below the package (`core.io`, `segment` for segment/__init__.py) -> their files."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` (at `path`) imports. `from citylens.x import y` counts y when it is a
    module (and x only for names that are not: importing a submodule is no import of its package's names)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                full = ".".join(["citylens", *base, *([node.module] if node.module else [])])
            else:
                full = node.module or ""
            subs = [f"{full}.{a.name}" for a in node.names]
            inner_subs = [t.removeprefix("citylens.") for t in subs]
            targets = subs if all(t in modules for t in inner_subs) else [full, *subs]
        else:
            continue
        for target in targets:
            if target != "citylens" and not target.startswith("citylens."):
                continue
            inner = target.removeprefix("citylens").removeprefix(".")
            if inner in modules and inner != name:
                out.add(inner)
    return out


def level(name: str) -> int | None:
    """The level of the longest LAYERS key that is `name` or a dotted prefix of it (None: not placed)."""
    parts = name.split(".") if name else []
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in LAYERS:
            return LAYERS[key]
    return LAYERS[""] if not name else None


def problems(root: Path) -> list[str]:
    """Every import that runs up the table or between level-1 packages, every unplaced module, every cycle."""
    modules = module_names(root)
    graph = {name: imports(path, name, modules) for name, path in modules.items()}
    found = []
    for name, targets in sorted(graph.items()):
        source = level(name)
        if source is None:
            found.append(f"{modules[name]}: module citylens.{name} has no place in the layer table")
            continue
        for target in sorted(targets):
            goal = level(target)
            if goal is None:
                continue  # reported as unplaced above
            if goal > source:
                found.append(f"{modules[name]}: up from level {source} to citylens.{target} (level {goal})")
            elif goal == source == 1 and name.split(".")[0] != target.split(".")[0]:
                found.append(f"{modules[name]}: sideways between level-1 packages to citylens.{target}")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [[*component, component[0]] for component in components]


def test_the_package_imports_run_down_the_layers_without_cycles():
    assert problems(PACKAGE) == []


def test_every_top_level_module_has_a_layer():
    assert all(level(name) is not None for name in module_names(PACKAGE))


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "citylens" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "citylens"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"core/__init__.py": "", "core/io.py": "from citylens.report.sweep import x\n"},
            "core/io.py: up from level 0 to citylens.report.sweep (level 4)",
        ),
        (
            {"segment/__init__.py": "", "segment/base.py": "def f():\n    import citylens.data.records\n"},
            "segment/base.py: sideways between level-1 packages to citylens.data.records",
        ),
        (
            {"report/__init__.py": "", "report/x.py": "from citylens.app import run_views\n"},
            "report/x.py: up from level 4 to citylens.app.run_views (level 5)",
        ),
        ({"newthing.py": ""}, "module citylens.newthing has no place in the layer table"),
        (
            {
                "analysis/__init__.py": "",
                "analysis/a.py": "from citylens.analysis.b import f\n",
                "analysis/b.py": "from citylens.analysis import a\n",
            },
            "import cycle: analysis.a -> analysis.b -> analysis.a",
        ),
    ],
)
def test_the_check_finds_back_edges_sideways_edges_strays_and_cycles(tmp_path: Path, files, expected):
    root = _tree(tmp_path, {"__init__.py": "", "data/__init__.py": "", "data/records.py": "", **files})
    (root / "report").mkdir(exist_ok=True)
    (root / "report" / "sweep.py").write_text("")
    (root / "app").mkdir(exist_ok=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "run_views.py").write_text("")
    found = problems(root)
    assert len(found) == 1 and found[0].endswith(expected), found


def test_allowed_imports_pass(tmp_path: Path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/io.py": "import citylens\nfrom citylens.core.faults import kill_point\n",
            "segment/__init__.py": "from citylens.segment.base import Segmenter\n",
            "segment/base.py": "from citylens.core.io import x\n",
            "report/__init__.py": "",
            "app/__init__.py": "",
            "app/report_cli.py": "from citylens.app.run_views import view_reader\n",
            "app/run_views.py": "from citylens.report import sweep\n",
            "report/sweep.py": "from citylens import figures\n",
            "figures.py": "from citylens.segment import base\n",
            "core/faults.py": "",
        },
    )
    assert problems(root) == []


# ---- Test files import the package and libraries, never each other.


def cross_test_imports(path: Path) -> list[str]:
    """The imports in `path` of a test file or conftest (`tests...`, `conftest`, `test_...`, relative ones),
    as "file:line: module"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = ["." * node.level + (node.module or "")]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if name.startswith(".") or top in ("tests", "conftest") or top.startswith("test_"):
                found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_no_test_file_imports_another_or_conftest():
    found = [line for path in sorted(TESTS.rglob("*.py")) for line in cross_test_imports(path)]
    assert not found, "make these helpers fixtures in tests/conftest.py:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "from tests.conftest import compose_cfg",
        "from tests.test_analysis_faithfulness import ratio_rows",
        "import tests.conftest",
        "import tests",
        "from tests import conftest",
        "from .conftest import REAL",
        "from . import conftest",
        "from conftest import REAL",
        "import test_train",
        "def f():\n    from tests.conftest import REAL",
    ],
)
def test_the_check_finds_every_form_of_a_test_file_import(tmp_path: Path, source: str):
    path = tmp_path / "test_x.py"
    path.write_text(source + "\n")
    assert len(cross_test_imports(path)) == 1


def test_the_check_allows_the_package_and_libraries(tmp_path: Path):
    path = tmp_path / "test_x.py"
    path.write_text("import pytest\nimport testfixtures\nfrom citylens.pipeline import Variant\n")
    assert cross_test_imports(path) == []


# Tests that run the whole program rather than one module keep a descriptive name (tests/conftest.py).
SUITE_WIDE = {
    "test_faults",
    "test_scale",
    "test_packaging",
    "test_layers",
    "test_imports",
    "test_same_outputs",
    "test_bench",
    "test_tools_results_doc",
}


def unnamed_test_files(tests: Path, package: Path) -> list[str]:
    """Test files whose name is no module's: test_<dotted path below citylens, dots as underscores>.py."""
    modules = {name.replace(".", "_") for name in module_names(package) if name}
    return sorted(
        path.name
        for path in tests.glob("test_*.py")
        if path.stem not in SUITE_WIDE and path.stem.removeprefix("test_") not in modules
    )


def test_every_test_file_is_named_after_its_module():
    assert unnamed_test_files(TESTS, PACKAGE) == []


def test_the_naming_check_finds_a_stray_file(tmp_path: Path):
    for name in ("test_pipeline_runs.py", "test_faults.py", "test_misc.py", "test_pipeline.py"):
        (tmp_path / name).write_text("")
    assert unnamed_test_files(tmp_path, PACKAGE) == ["test_misc.py"]
