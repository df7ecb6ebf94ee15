"""tools/same_outputs.py: pairing, normalisation and comparison on small trees written here (no sweep)."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "same_outputs.py"
_spec = importlib.util.spec_from_file_location("same_outputs", TOOL)
so = importlib.util.module_from_spec(_spec)
sys.modules["same_outputs"] = so  # dataclasses look their module up by name
_spec.loader.exec_module(so)


def write_tree(root: Path, sweep: str = "sweep", finished: str = "2026-01-01T00:00:00", pid: int = 1) -> Path:
    """A miniature sweep: a mask store, a figure, a CSV, a completion record, a checkpoint, a log."""
    run = root / "out" / sweep / "0_simple-s0"
    masks = run / "analysis" / "v" / "masks"
    masks.mkdir(parents=True)
    np.save(masks / "low_res.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    (masks / "meta.json").write_text(json.dumps({"n": 3, "checkpoint_sha256": f"ab{pid}"}))
    (run / "analysis" / "v" / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    (run / "analysis" / "v" / "object_ratios.csv").write_text("city,object,ratio\ntokyo,fence,0.5\n")
    (run / "analysis" / "v" / "steps").mkdir()
    record = {
        "options": {"n_boot": 10},
        "checkpoint_sha256": f"ab{pid}",
        "inputs": {"masks/meta.json": f"m{pid}", "masks/low_res.npy": "l"},
    }
    (run / "analysis" / "v" / "steps" / "objects.json").write_text(json.dumps(record))
    (run / "complete.json").write_text(
        json.dumps(
            {
                "finished_at": finished,
                "artefacts": {
                    "checkpoints/best.ckpt": {"sha256": f"c{pid}", "size": 10},
                    "split.csv": {"sha256": "s", "size": 3},
                    "analysis/v/steps/objects.json": {"sha256": f"r{pid}", "size": 9},
                },
            }
        )
    )
    (run / "checkpoints").mkdir()
    with zipfile.ZipFile(run / "checkpoints" / "best.ckpt", "w") as z:
        z.writestr(f".best.tmp{pid}/data.pkl", b"weights")
        z.writestr(f".best.tmp{pid}/data/0", b"\x00\x01\x02")
    (run / "train.log").write_text(f"[{finished}][citylens][INFO] - t-SNE done in {pid}.0 s\n")
    return root / "out"


def rows_by_path(base: Path, head: Path) -> dict[str, so.Row]:
    return {r.rel: r for r in so.compare(so.walk(base, "out/"), so.walk(head, "out/"))}


def test_identical_trees_pass_with_only_documented_normalisation(tmp_path: Path) -> None:
    # Two runs of one revision: same artefacts, different finish time and pid-named checkpoint folder.
    base = write_tree(tmp_path / "a", finished="2026-01-01T00:00:00", pid=11)
    head = write_tree(tmp_path / "b", finished="2026-01-02T09:30:00", pid=22)
    rows = rows_by_path(base, head)
    assert len(rows) == 8
    assert {r.status for r in rows.values()} == {"identical", "not-compared"}
    assert so.passed(rows.values())
    run = "out/sweep/0_simple-s0/"
    assert rows[run + "train.log"].status == "not-compared"
    assert rows[run + "complete.json"].rule == "*/complete.json"
    assert rows[run + "checkpoints/best.ckpt"].rule == "*.ckpt"
    assert rows[run + "analysis/v/masks/low_res.npy"].rule == ""  # byte for byte
    # The raw bytes do differ where a rule applied: the rules are not a no-op.
    a, b = so.walk(base, "out/"), so.walk(head, "out/")
    assert rows[run + "analysis/v/steps/objects.json"].rule == "*/steps/*.json"
    for rel in (
        "complete.json",
        "checkpoints/best.ckpt",
        "analysis/v/masks/meta.json",
        "analysis/v/steps/objects.json",
    ):
        assert so.sha256(a[run + rel]) != so.sha256(b[run + rel])


def test_step_record_differing_beyond_the_checkpoint_hashes_fails(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a", pid=11)
    head = write_tree(tmp_path / "b", pid=22)
    path = head / "sweep" / "0_simple-s0" / "analysis" / "v" / "steps" / "objects.json"
    record = json.loads(path.read_text())
    record["inputs"]["masks/low_res.npy"] = "changed"
    path.write_text(json.dumps(record))
    rows = rows_by_path(base, head)
    assert rows["out/sweep/0_simple-s0/analysis/v/steps/objects.json"].status == "differing"
    assert not so.passed(rows.values())


def test_one_changed_npy_byte_fails(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a")
    head = write_tree(tmp_path / "b")
    store = head / "sweep" / "0_simple-s0" / "analysis" / "v" / "masks" / "low_res.npy"
    data = bytearray(store.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last float32
    store.write_bytes(bytes(data))
    rows = rows_by_path(base, head)
    row = rows["out/sweep/0_simple-s0/analysis/v/masks/low_res.npy"]
    assert row.status == "differing"
    assert row.note.startswith("1/12 elements differ")
    assert not so.passed(rows.values())
    assert [r.rel for r in rows.values() if r.status == "differing"] == [row.rel]


def test_json_differing_only_in_a_time_key_passes_but_not_elsewhere(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a", finished="2026-01-01T00:00:00")
    head = write_tree(tmp_path / "b", finished="2030-12-31T23:59:59")
    rel = "out/sweep/0_simple-s0/complete.json"
    assert rows_by_path(base, head)[rel].status == "identical"
    # A change to a key that is compared (an artefact's size) is caught and named.
    record = head / "sweep" / "0_simple-s0" / "complete.json"
    value = json.loads(record.read_text())
    value["artefacts"]["split.csv"]["size"] = 4
    record.write_text(json.dumps(value))
    row = rows_by_path(base, head)[rel]
    assert row.status == "differing"
    assert "artefacts.split.csv.size" in row.note


def test_checkpoint_member_change_fails(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a", pid=1)
    head = write_tree(tmp_path / "b", pid=2)
    ckpt = head / "sweep" / "0_simple-s0" / "checkpoints" / "best.ckpt"
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr(".best.tmp2/data.pkl", b"weights")
        z.writestr(".best.tmp2/data/0", b"\x00\x01\x03")
    row = rows_by_path(base, head)["out/sweep/0_simple-s0/checkpoints/best.ckpt"]
    assert row.status == "differing"
    assert row.note == "zip members differ: data/0"


def test_file_on_one_side_is_reported(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a")
    head = write_tree(tmp_path / "b")
    (head / "sweep" / "report").mkdir()
    (head / "sweep" / "report" / "new.csv").write_text("x\n1\n")
    (base / "sweep" / "0_simple-s0" / "analysis" / "v" / "figure.png").unlink()
    rows = rows_by_path(base, head)
    assert rows["out/sweep/report/new.csv"].status == "only-in-head"
    assert rows["out/sweep/0_simple-s0/analysis/v/figure.png"].status == "only-in-head"
    (head / "sweep" / "report" / "new.csv").unlink()
    (head / "sweep" / "0_simple-s0" / "analysis" / "v" / "object_ratios.csv").unlink()
    rows = rows_by_path(base, head)
    assert rows["out/sweep/0_simple-s0/analysis/v/object_ratios.csv"].status == "only-in-base"
    assert not so.passed(rows.values())


def test_timestamped_folders_pair_up(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a", sweep="2026-12-02_07-23-23_610767")
    head = write_tree(tmp_path / "b", sweep="2027-01-05_10-00-01_000001")
    rows = rows_by_path(base, head)
    assert all(rel.startswith("out/<time>/0_simple-s0/") for rel in rows)
    assert so.passed(rows.values())
    assert (
        so.stable_relpath("runs/2026-12-02_07-23-23_610767_simple-s0/x.csv") == "runs/<time>_simple-s0/x.csv"
    )


def test_report_names_every_rule_and_counts(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a", pid=1)
    head = write_tree(tmp_path / "b", pid=2)
    (head / "sweep" / "extra.md").write_text("hi\n")
    out = io.StringIO()
    so.print_report(so.compare(so.walk(base, "out/"), so.walk(head, "out/")), out=out)
    text = out.getvalue()
    for rule in so.RULES:
        assert f"{rule.pattern} ({rule.reason})" in text
    assert "not compared: */train.log" in text
    assert "only-in-head  out/sweep/extra.md" in text
    all_line = next(line for line in text.splitlines() if line.strip().startswith("all "))
    assert all_line.split()[1:] == ["7", "0", "0", "1", "1"]


def test_unknown_revision_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert so.main(["--repo", str(repo), "--base", "no-such-rev", "--head", "HEAD"]) == 2
    assert "no such revision" in capsys.readouterr().err


def test_command_line_exclusions_cover_files_of_one_side_and_are_printed(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "a")
    head = write_tree(tmp_path / "b")
    (head / "sweep" / "0_simple-s0" / "steps").mkdir()
    (head / "sweep" / "0_simple-s0" / "steps" / "causal.json").write_text("{}")
    rules = so.command_line_rules(["*/steps/*.json"], [])
    rows = {r.rel: r for r in so.compare(so.walk(base, "out/"), so.walk(head, "out/"), rules)}
    assert rows["out/sweep/0_simple-s0/steps/causal.json"].status == "not-compared"
    assert so.passed(rows.values())
    assert not so.passed(so.compare(so.walk(base, "out/"), so.walk(head, "out/")))
    out = io.StringIO()
    so.print_report(list(rows.values()), rules, out=out)
    assert (
        "not compared: */steps/*.json (excluded on the command line (--exclude)) [2 files]" in out.getvalue()
    )


def test_command_line_drop_key_extends_the_rule_of_the_same_file() -> None:
    rules = so.command_line_rules(["*/steps/*.json"], ["*/complete.json:artefacts..hydra/*", "*/x.json:k"])
    complete = [r for r in rules if r.pattern == "*/complete.json"]
    assert len(complete) == 1 and complete[0].keys[-1] == "artefacts..hydra/*"
    assert complete[0].keys[:-1] == next(r for r in so.RULES if r.pattern == "*/complete.json").keys
    assert so.rule_for("out/sweep/r/steps/explain.json", rules).kind == "exclude"
    assert so.rule_for("out/sweep/r/x.json", rules).keys == ("k",)
    with pytest.raises(ValueError, match="expected GLOB:KEY"):
        so.command_line_rules([], ["no-colon"])
