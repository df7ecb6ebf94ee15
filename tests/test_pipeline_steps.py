"""The step runner: order by needs, completion records, skipping what is current and re-running what is not;
every step's options come from its one YAML file (same keys as the dataclass, no defaults in code)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from hydra.utils import get_class
from torch import nn

from citylens.app.config import CONF_DIR
from citylens.pipeline import Variant
from citylens.pipeline.context import Context, StepResult
from citylens.pipeline.steps import RUN, StepOptions, is_current, ordered, record_path, run_analysis

RAN: list[str] = []


@dataclass(frozen=True)
class First(StepOptions):
    name: ClassVar[str] = "first"
    makes: ClassVar[tuple[str, ...]] = ("a.txt",)
    text: str

    def run(self, context: Context) -> StepResult:
        RAN.append(self.name)
        path = self.folder(context) / "a.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text)
        return StepResult([path])


@dataclass(frozen=True)
class Second(StepOptions):
    name: ClassVar[str] = "second"
    needs: ClassVar[tuple[str, ...]] = ("a.txt",)
    makes: ClassVar[tuple[str, ...]] = ("b.txt",)
    suffix: str

    def run(self, context: Context) -> StepResult:
        RAN.append(self.name)
        out = self.folder(context)
        (out / "b.txt").write_text((out / "a.txt").read_text() + self.suffix)
        return StepResult([out / "b.txt"])


@dataclass(frozen=True)
class OfTheRun(StepOptions):
    """A run-scope step that reads what a variant step writes only through `../../`-free names."""

    name: ClassVar[str] = "of_the_run"
    makes: ClassVar[tuple[str, ...]] = ("run.txt",)
    scope: ClassVar[str] = RUN

    def run(self, context: Context) -> StepResult:
        RAN.append(self.name)
        (Path(context.run_dir) / "run.txt").write_text("x")
        return StepResult([Path(context.run_dir) / "run.txt"])


@pytest.fixture
def context(split_data, tmp_path: Path) -> Context:
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"weights")
    RAN.clear()
    return Context(
        nn.Identity(), "simple", split_data(), tmp_path / "run", Variant(), checkpoint=str(checkpoint)
    )


def test_steps_run_after_what_they_need():
    assert [s.name for s in ordered([Second("!"), First("a")])] == ["first", "second"]
    assert [s.name for s in ordered([OfTheRun(), Second("!"), First("a")])] == [
        "of_the_run",
        "first",
        "second",
    ]


def test_circular_needs_are_refused_naming_the_steps():
    @dataclass(frozen=True)
    class Loop(StepOptions):
        name: ClassVar[str] = "loop"
        needs: ClassVar[tuple[str, ...]] = ("b.txt",)
        makes: ClassVar[tuple[str, ...]] = ("a.txt",)

    with pytest.raises(ValueError, match=r"circular needs among \['second', 'loop'\]"):
        ordered([Second("!"), Loop()])


def test_a_finished_step_is_recorded_and_skipped_until_something_it_depends_on_changes(context: Context):
    steps = [Second("!"), First("a"), OfTheRun()]
    assert set(run_analysis(context, steps)) == {"first", "second", "of_the_run"}
    assert RAN == ["first", "second", "of_the_run"]
    record = json.loads(record_path(steps[0], context).read_text())
    assert record_path(steps[0], context) == context.out / "steps" / "second.json"
    assert record_path(steps[2], context) == context.run_dir / "steps" / "of_the_run.json"
    assert record["options"] == {"suffix": "!"} and record["variant"]["explainer"] == "gradcam"
    assert set(record["inputs"]) == {"a.txt"} and set(record["outputs"]) == {"b.txt"}
    assert record["data"]["fingerprint"] == "hand-made"

    RAN.clear()
    assert run_analysis(context, steps) == {} and RAN == []
    # Other options of one step: that step runs again; its outputs are the same bytes, so nothing after it.
    assert set(run_analysis(context, [Second("?"), First("a"), OfTheRun()])) == {"second"}
    # Another input: the step that made it runs, and the one reading it.
    RAN.clear()
    run_analysis(context, [Second("?"), First("b"), OfTheRun()])
    assert RAN == ["first", "second"] and (context.out / "b.txt").read_text() == "b?"
    # An output touched by hand, or deleted: its step runs again.
    (context.out / "b.txt").write_text("edited")
    assert not is_current(Second("?"), context)
    RAN.clear()
    run_analysis(context, [Second("?"), First("b")])
    assert RAN == ["second"] and (context.out / "b.txt").read_text() == "b?"
    (Path(context.run_dir) / "run.txt").unlink()
    assert not is_current(OfTheRun(), context)


def test_another_checkpoint_or_no_checkpoint_reruns_everything(context: Context, tmp_path: Path):
    run_analysis(context, [First("a")])
    Path(context.checkpoint).write_bytes(b"other weights")
    context.__dict__.pop("checkpoint_sha256")  # a new context in a new process
    assert not is_current(First("a"), context)
    without = Context(nn.Identity(), "simple", context.test, context.run_dir, Variant())
    run_analysis(without, [First("a")])
    assert not is_current(First("a"), without)


def step_files() -> list[Path]:
    return sorted((Path(CONF_DIR) / "analysis" / "steps").glob("*.yaml"))


def test_every_step_yaml_names_its_options_class_and_every_field():
    """One place for a step's settings: its YAML holds every field of the dataclass, which has no defaults."""
    files = step_files()
    assert {f.stem for f in files} >= {"explain", "objects", "residuals", "causal", "faithfulness"}
    defaults = yaml.safe_load((Path(CONF_DIR) / "analysis" / "default.yaml").read_text())["defaults"]
    assert [f"steps/{f.stem}@steps.{f.stem}" for f in files] == sorted(d for d in defaults if d != "_self_")
    for path in files:
        conf = yaml.safe_load(path.read_text())
        cls = get_class(conf.pop("_target_"))
        assert issubclass(cls, StepOptions) and cls.name == path.stem, path.name
        fields = dataclasses.fields(cls)
        assert [f.name for f in fields] == list(conf), path.name
        assert all(f.default is dataclasses.MISSING for f in fields), f"{path.name}: a default in code"
        text = path.read_text()
        assert text.startswith("#"), f"{path.name}: say what the step does"
