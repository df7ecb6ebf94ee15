"""The fault suite: real subprocesses SIGKILLed at each phase, rerun with the same command, compared with an
uninterrupted run; failed jobs inside a sweep; bad input refused in one line; run folders read as data.

Kills land at exact phases through citylens.core.faults (CITYLENS_KILL_AT: the process SIGKILLs itself there).
Tiny data (15 images per city at 32 px, 3 epochs of 2 batches) keeps each run to seconds; the reference is one
uninterrupted sweep with a failing job, the command of the issue's "done when" (docs/faults.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

from citylens.app.analyze import analyze
from citylens.app.config import ConfigError, preflight, run_config
from citylens.app.run_views import view_reader
from citylens.app.train import train
from citylens.core.run_folder import best_checkpoint, check_complete, read_complete
from citylens.pipeline.runs import open_run
from citylens.pipeline.variant import ANALYSIS_DIR, Variant, list_variants
from citylens.report.examples import load_views

TINY = [
    "experiment=smoke",
    "model=simpler",
    "data.images_per_city=15",
    "data.input_size=32",
    "trainer.max_epochs=3",
    "logger=none",
    "callbacks.progress_bar=null",
    "hydra.callbacks.sweep_report.options.n_boot=50",
    "hydra.callbacks.sweep_report.options.n_perm=50",
]
# The reference sweep: job 0 trains (the single-run reference), job 1 fails on its learning rate.
SWEEP = ["-m", *TINY, "seed=0", "model.lr=1e-3,-1"]
ONE_RUN = [*TINY, "seed=0", "model.lr=1e-3"]
# Files whose bytes depend on paths, times or the order of writes, compared otherwise or not at all.
SKIP_PARTS = {"checkpoints", ".hydra", "csv", "figures", "wandb", "steps"}
SKIP_NAMES = {"complete.json", "metrics.json", "meta.json", "train.log", "failed.json"}


def cli(
    args: list[str],
    cache: Path,
    kill_at: str | None = None,
    kill_after: int = 0,
    module: str = "citylens.app.train",
) -> subprocess.CompletedProcess:
    """Run a citylens command line with its caches in `cache`, optionally SIGKILLed at a kill point."""
    env = {
        **os.environ,
        "CITYLENS_CACHE": str(cache),
        "CITYLENS_OUTPUTS": str(cache.parent / "out"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "TMPDIR": str(cache.parent / "tmp"),
    }
    (cache.parent / "tmp").mkdir(parents=True, exist_ok=True)
    env.pop("CITYLENS_KILL_AT", None)
    if kill_at:
        env |= {"CITYLENS_KILL_AT": kill_at, "CITYLENS_KILL_AFTER": str(kill_after)}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.stdout + proc.stderr)[-3000:]


def ok(proc: subprocess.CompletedProcess, code: int = 0) -> str:
    log = proc.stdout + proc.stderr
    assert proc.returncode == code, log[-3000:]
    return log


def without_paths(record: dict) -> dict:
    """A record without what names the run folder (a checkpoint holds its own path, so its hash too)."""
    paths = ("run_dir", "best_checkpoint", "checkpoint", "checkpoint_sha256")
    out = {k: v for k, v in record.items() if k not in paths}
    if isinstance(out.get("dataset"), dict):
        out["dataset"] = {k: v for k, v in out["dataset"].items() if k != "root"}
    return out


def assert_same_run(run: Path, ref: Path) -> None:
    """Metrics, masks, ratios, t-SNE, split, residuals and final weights equal the uninterrupted run's."""
    assert read_complete(run) is not None and check_complete(run, hashes=True) == []
    compared = 0
    for path in sorted(ref.rglob("*")):
        rel = path.relative_to(ref)
        if not path.is_file() or SKIP_PARTS & set(rel.parts) or rel.name in SKIP_NAMES:
            continue
        assert (run / rel).read_bytes() == path.read_bytes(), rel
        compared += 1
    assert compared >= 8
    for name in ("metrics.json", f"{ANALYSIS_DIR}/{Variant().name}/masks/meta.json"):
        got, want = (json.loads((d / name).read_text()) for d in (run, ref))
        assert without_paths(got) == without_paths(want), name
    # Step records name the checkpoint's hash (its bytes hold a pid-named folder): the rest must agree.
    records = sorted(p.relative_to(ref) for p in ref.rglob("steps/*.json"))
    assert records and records == sorted(p.relative_to(run) for p in run.rglob("steps/*.json"))
    for rel in records:
        got, want = (json.loads((d / rel).read_text()) for d in (run, ref))
        for key in ("step", "options", "variant", "data", "segmenter"):
            assert got[key] == want[key], (rel, key)
    weights = [
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for d in (run, ref)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert not [p for p in run.rglob(".*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The uninterrupted reference: the sweep with a failing job (exit 1, report naming it)."""
    root = tmp_path_factory.mktemp("faults")
    cache = root / "cache"
    sweep = root / "sweep"
    proc = cli([*SWEEP, f"hydra.sweep.dir={sweep}"], cache)
    return SimpleNamespace(root=root, cache=cache, sweep=sweep, run=sweep / "0_simpler-s0", proc=proc)


def test_a_failed_job_costs_only_itself(ref: SimpleNamespace):
    log = ok(ref.proc, 1)
    assert "job 1_simpler-s0 failed: model.lr: learning rate must be positive, got -1" in log
    assert read_complete(ref.run) is not None
    failed = json.loads((ref.sweep / "1_simpler-s0" / "failed.json").read_text())
    assert failed["error"] == "model.lr: learning rate must be positive, got -1"
    runs = pd.read_csv(ref.sweep / "report" / "runs.csv").set_index("run")
    assert runs["status"].to_dict() == {"0_simpler-s0": "finished", "1_simpler-s0": "failed"}
    assert "`1_simpler-s0`: failed: model.lr" in (ref.sweep / "report" / "report.md").read_text()


def test_kill_during_training_and_checkpoint_save_resumes_to_the_same_run(
    ref: SimpleNamespace, tmp_path: Path
):
    run = tmp_path / "run"
    args = [*ONE_RUN, f"hydra.run.dir={run}"]
    # 1: killed while writing epoch 0's last.ckpt (its best.ckpt is whole, the temporary is left behind).
    killed(cli(args, ref.cache, kill_at="checkpoint_save", kill_after=1))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names[0].startswith(".last.tmp") and names[1:] == ["best.ckpt"]
    # 2: resumed from best.ckpt (epoch 0), killed in the middle of epoch 2 (last.ckpt = epoch 1).
    killed(cli(args, ref.cache, kill_at="train_batch", kill_after=2))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, mmap=True)["epoch"] == 1
    # 3: the same command finishes the run; a 4th finds it complete and skips it.
    log = ok(cli(args, ref.cache))
    assert f"resuming {run} from {run / 'checkpoints' / 'last.ckpt'}" in log
    assert_same_run(run, ref.run)
    assert not list((ref.root / "tmp").iterdir()), "a kill left files in the system temp folder"
    assert "already finished, skipped" in ok(cli(args, ref.cache))


def test_kill_during_analysis_resumes_reusing_the_mask_store(ref: SimpleNamespace, tmp_path: Path):
    run = tmp_path / "run"
    args = [*ONE_RUN, f"hydra.run.dir={run}"]
    killed(cli(args, ref.cache, kill_at="analysis"))
    assert (run / "metrics.json").is_file() and not (run / "complete.json").exists()
    log = ok(cli(args, ref.cache))
    assert "mask store of the same checkpoint already written, kept" in log
    assert_same_run(run, ref.run)


def test_kill_during_generation_and_cache_build_resumes(ref: SimpleNamespace, tmp_path: Path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    args = [*ONE_RUN, f"hydra.run.dir={run}"]
    killed(cli(args, cache, kill_at="generation", kill_after=10))
    (partial,) = cache.glob(".synthetic-*.partial")
    assert len(list(partial.rglob("*.jpg"))) >= 10 and not (partial / "manifest.json").exists()
    killed(cli(args, cache, kill_at="cache_chunk"))
    assert not list(cache.glob(".synthetic-*")) and not list(cache.glob("views-*/complete.json"))
    ok(cli(args, cache))
    (synthetic,) = cache.glob("synthetic-*")
    (reference,) = ref.cache.glob("synthetic-*")
    for path in sorted(reference.rglob("*.*")):
        assert (synthetic / path.relative_to(reference)).read_bytes() == path.read_bytes()
    assert_same_run(run, ref.run)


def test_kill_during_the_report_and_resume_by_sweep_dir(ref: SimpleNamespace, tmp_path: Path):
    sweep = tmp_path / "sweep"
    shutil.copytree(ref.sweep, sweep, copy_function=os.link, ignore=shutil.ignore_patterns("report"))
    killed(cli([f"resume={sweep}"], ref.cache, kill_at="report"))
    assert not (sweep / "report").exists() and len([p for p in sweep.iterdir() if ".tmp" in p.name]) == 1
    log = ok(cli([f"resume={sweep}"], ref.cache), 1)
    assert "already finished, skipped" in log and "job 1_simpler-s0 failed: model.lr" in log
    for name in ("table2.csv", "runs.csv", "ratio_distances.csv", "recovery.csv"):
        got, want = (d / "report" / name for d in (sweep, ref.sweep))
        assert got.read_text() == want.read_text(), name
    assert not [p for p in sweep.iterdir() if ".tmp" in p.name]


def test_a_planted_target_in_a_run_folder_is_never_executed(ref: SimpleNamespace, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(ref.run, run, copy_function=os.link)
    marker = tmp_path / "planted"
    saved = run / ".hydra" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    config["data"] = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    saved.write_text(yaml.safe_dump(config))
    os.environ["CITYLENS_CACHE"] = str(ref.cache)
    try:
        analyze(run)  # composed from citylens' configs and the recorded overrides, not from config.yaml
        reopened = open_run(run, list_variants(run)[0])
        assert load_views(view_reader, reopened, ["pittsburgh/pittsburgh_00000.jpg"]) is not None
    finally:
        del os.environ["CITYLENS_CACHE"]
    assert not marker.exists() and read_complete(run)["written_by"] == "citylens-analyze"
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump([f"+data.x={{_target_: pathlib.Path.touch, self: {marker}}}"]))
    with pytest.raises(ConfigError, match="refusing override .*a run folder may not name code"):
        run_config(run, [])
    with pytest.raises(ConfigError, match="refusing override"):
        preflight([f"resume={run}"])
    assert not marker.exists()


def test_a_damaged_best_checkpoint_falls_back_to_last(ref: SimpleNamespace, tmp_path: Path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ref.run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    for damage in (b"", (ref.run / "checkpoints" / "best.ckpt").read_bytes()[:5000]):
        (run / "checkpoints" / "best.ckpt").write_bytes(damage)
        assert best_checkpoint(run) == run / "checkpoints" / "last.ckpt"
        assert "best.ckpt is damaged" in caplog.text
    (run / "checkpoints" / "last.ckpt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="no loadable best.ckpt or last.ckpt"):
        best_checkpoint(run)


@pytest.mark.parametrize(
    "args,message",
    [
        (["data=folder", "data.root="], "data.root: empty"),
        (["data=folder", "data.root={tmp}"], "data.root: {tmp} has 0 city folder(s), need at least 2"),
        (
            ["experiment=demo"],
            "experiment=demo: defines a sweep (model=vgg11,resnet18,simple,simpler, seed=0,1)",
        ),
        (
            ["trainer=gpu"] if not torch.cuda.is_available() else ["trainer.devices=99", "trainer=gpu"],
            "trainer.",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_data_work(args: list[str], message: str, tmp_path: Path):
    (tmp_path / "photos").mkdir()
    args = [a.replace("{tmp}", str(tmp_path / "photos")) for a in args]
    message = message.replace("{tmp}", str(tmp_path / "photos"))
    proc = cli(args, tmp_path / "cache")
    log = ok(proc, 2)
    assert message in log and "Traceback" not in log, log[-2000:]
    assert not (tmp_path / "cache").exists()


def test_too_few_images_for_the_split_is_refused_before_training(write_folder_dataset, tmp_path: Path):
    # Balanced (data=folder balances), every city keeps 3 images: too few for a test image under 6:2:2.
    write_folder_dataset(tmp_path / "photos", {"lyon": 6, "oslo": 4, "rome": 3})
    args = [
        "experiment=smoke",
        "model=simple",
        "data=folder",
        f"data.root={tmp_path / 'photos'}",
        "data.input_size=32",
    ]
    log = ok(cli([*args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path / "cache"), 2)
    assert "city 'lyon': 3 usable image(s) leave its test split empty" in log and "at least 5 images" in log
    assert "Traceback" not in log and not (tmp_path / "run" / "checkpoints").exists()
    assert json.loads((tmp_path / "run" / "failed.json").read_text())["error"].startswith("city 'lyon'")


def test_missing_launcher_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("citylens.app.config._importable", lambda module: False)
    with pytest.raises(ConfigError, match=r"hydra/launcher=parallel: .*pip install -e \.\[scale\]"):
        preflight(["-m", "hydra/launcher=parallel", "seed=0,1"])
    assert preflight(["data.cities={lyon: {planted: {fence: 0.9}}}"]) == [
        "~data.cities",
        "+data.cities={lyon: {planted: {fence: 0.9}}}",
    ]


@pytest.mark.slow
def test_kill_during_analysis_then_citylens_analyze_finishes_the_run(ref: SimpleNamespace, tmp_path: Path):
    run = tmp_path / "run"
    killed(cli([*ONE_RUN, f"hydra.run.dir={run}"], ref.cache, kill_at="analysis"))
    ok(cli([str(run)], ref.cache, module="citylens.app.analyze"))
    assert read_complete(run)["written_by"] == "citylens-analyze"
    assert_same_run(run, ref.run)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["parallel", "slurm_local"])
def test_failed_job_with_the_parallel_and_slurm_launchers(
    ref: SimpleNamespace, tmp_path: Path, launcher: str
):
    if launcher == "slurm_local":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    log = ok(cli([*SWEEP, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"], ref.cache), 1)
    assert "1_simpler-s0" in log and "did not finish" in log
    runs = pd.read_csv(sweep / "report" / "runs.csv").set_index("run")
    assert runs["status"].to_dict() == {"0_simpler-s0": "finished", "1_simpler-s0": "failed"}
    assert_same_run(sweep / "0_simpler-s0", ref.run)


def test_a_failed_job_ends_its_wandb_run_with_exit_code_1(
    compose_cfg, wandb_record, write_folder_dataset, tmp_path: Path
):
    write_folder_dataset(tmp_path / "photos", {"lyon": 3, "oslo": 3})
    overrides = [
        "experiment=smoke",
        "model=simple",
        "logger=wandb",
        "data=folder",
        f"data.root={tmp_path / 'photos'}",
    ]
    cfg = compose_cfg([*overrides, "data.input_size=32"], tmp_path / "run", tmp_path / "cache")
    with pytest.raises(ConfigError, match="^city 'lyon': 3 usable image"):
        train(cfg)
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    record = wandb_record(run_file)
    assert record["state"] == "failed" and record["exit_code"] == 1
