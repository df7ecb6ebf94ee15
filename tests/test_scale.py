"""Scaling out: DDP on 2 CPU processes against a single process, a parallel sweep, the scale-out configs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning_utilities.core import rank_zero as utils_rank_zero
from pytorch_lightning.utilities import rank_zero

from citylens.app.train import train
from citylens.explain.store import open_store
from citylens.models import CityClassifier
from citylens.pipeline import Variant
from citylens.pipeline.context import Context
from citylens.pipeline.masks import compute_maps, shard_bounds

VARIANT = f"analysis/{Variant().name}"

# 12 test images in batches of 4: rank 0 explains images 0-7, rank 1 images 8-11.
SMOKE = [
    "experiment=smoke",
    "model=simple",
    "logger=csv",
    "callbacks.progress_bar=null",
    "analysis.steps.explain.batch_size=4",
]


def test_test_split_shares_are_whole_batches_covering_every_image():
    for n, batch, world in [(12, 4, 2), (12, 64, 2), (130, 64, 3), (5, 1, 3), (64, 64, 4)]:
        shares = [shard_bounds(n, batch, rank, world) for rank in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert all(start % batch == 0 or start == n for start, _ in shares)


@pytest.fixture(scope="module")
def ddp_run(compose_cfg, run_cli, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The smoke experiment on 2 DDP processes (gloo) and on one process, on the same data."""
    root = tmp_path_factory.mktemp("ddp")
    # One thread per rank on any machine: CPU float results depend on the thread count, not on DDP.
    proc = run_cli([*SMOKE, "trainer=ddp_cpu", f"hydra.run.dir={root / 'ddp'}"], root, OMP_NUM_THREADS="1")
    cfg = compose_cfg([*SMOKE, "trainer=cpu"], root / "single", root / "cache")
    train(cfg)
    return SimpleNamespace(
        root=root, ddp=root / "ddp", single=root / "single", cfg=cfg, log=proc.stdout + proc.stderr
    )


def test_ddp_ran_two_processes_and_wrote_every_artefact_once(ddp_run: SimpleNamespace):
    assert "MEMBER: 2/2" in ddp_run.log, ddp_run.log[-3000:]
    ddp = ddp_run.ddp
    assert not (ddp_run.root / "out").exists(), "a rank created a run dir of its own"
    for name in (
        "metrics.json",
        "split.csv",
        *(f"{VARIANT}/{n}" for n in ("tsne.csv", "object_ratios.csv", "residuals.csv")),
    ):
        assert (ddp / name).is_file(), name
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert [p.name for p in (ddp / "csv").iterdir()] == ["version_0"]
    assert sorted(p.name for p in (ddp / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    leftovers = [p for p in ddp.rglob(".*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    assert len(list((ddp_run.root / "cache" / "labels").iterdir())) == 1


def test_ddp_split_and_store_match_a_single_process(ddp_run: SimpleNamespace):
    assert (ddp_run.ddp / "split.csv").read_text() == (ddp_run.single / "split.csv").read_text()
    ddp, single = open_store(ddp_run.ddp), open_store(ddp_run.single)
    assert ddp.image_ids == single.image_ids and len(ddp) == 12
    assert ddp.cities == single.cities and np.array_equal(ddp.targets, single.targets)
    assert ddp.meta["checkpoint"] == str(ddp_run.ddp / "checkpoints" / "best.ckpt")
    ratios = [pd.read_csv(run / VARIANT / "object_ratios.csv") for run in (ddp_run.ddp, ddp_run.single)]
    assert list(ratios[0].columns) == list(ratios[1].columns)
    keys = [c for c in ratios[0].columns if ratios[0][c].dtype == object] + ["threshold"]
    assert ratios[0][keys].equals(ratios[1][keys])


def test_ddp_store_equals_grad_cam_of_its_checkpoint_on_one_process(ddp_run: SimpleNamespace, tmp_path: Path):
    module = CityClassifier.load_from_checkpoint(
        ddp_run.ddp / "checkpoints" / "best.ckpt", map_location="cpu"
    )
    datamodule = instantiate(ddp_run.cfg.data)
    datamodule.setup("test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        context = Context(module.eval().network, "simple", datamodule.split_view("test"), tmp_path, Variant())
        low_res, probs = compute_maps(context, batch_size=4)
    finally:
        torch.set_num_threads(threads)
    store = open_store(ddp_run.ddp)
    assert np.array_equal(np.asarray(store.low_res), low_res)
    assert np.array_equal(np.asarray(store.probs), probs)


def test_ddp_jobs_of_a_multirun_each_launch_their_ranks_in_their_own_dir(run_cli, tmp_path: Path):
    args = ["-m", *SMOKE, "trainer=ddp_cpu", "seed=0,1"]
    log = run_cli(args, tmp_path, timeout=600, OMP_NUM_THREADS="1").stdout
    assert not (tmp_path / "out" / "runs").exists(), "a rank started a run of its own"
    (sweep,) = list((tmp_path / "out" / "sweeps").iterdir())
    runs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert runs == ["0_simple-s0", "1_simple-s1"]
    for run in runs:
        assert (sweep / run / "train_ddp_process_1.log").is_file(), log[-3000:]
    assert pd.read_csv(sweep / "1_simple-s1" / VARIANT / "residuals.csv")["run_b"].tolist() == ["0_simple-s0"]
    assert len(pd.read_csv(sweep / "report" / "table2.csv")) == 1


def test_slurm_tasks_share_one_run_dir(tmp_path: Path):
    """trainer=slurm as srun starts it: one process per task, ranks from SLURM's variables, one run dir."""
    run_dir = tmp_path / "out" / "runs" / "slurm-4242"
    args = [
        *SMOKE,
        "trainer=slurm",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
    ]
    args += ["+trainer.strategy.process_group_backend=gloo", f"hydra.run.dir={run_dir}"]
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "citylens"}
    slurm |= {
        "SLURM_NODELIST": "localhost",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODEID": "0",
        "OMP_NUM_THREADS": "1",
    }
    env = {**os.environ, **slurm, "CITYLENS_OUTPUTS": str(tmp_path / "out"), "CITYLENS_CACHE": str(tmp_path)}
    cmd = [sys.executable, "-m", "citylens.app.train", *args]
    tasks = [
        subprocess.Popen(
            cmd,
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (1, 0)
    ]
    logs = [task.communicate(timeout=600)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], logs[1][-3000:] + logs[0][-3000:]
    assert "MEMBER: 2/2" in logs[0] and "MEMBER: 1/2" in logs[1]
    assert [p.name for p in (tmp_path / "out" / "runs").iterdir()] == ["slurm-4242"]
    assert (run_dir / "metrics.json").is_file() and len(open_store(run_dir)) == 12


def test_parallel_sweep_with_the_joblib_launcher(run_cli, tmp_path: Path):
    proc = run_cli(
        [
            "-m",
            "experiment=smoke",
            "model=simple,simpler",
            "seed=0,1",
            "hydra/launcher=parallel",
            "logger=csv",
            "callbacks.progress_bar=null",
            "trainer.max_epochs=3",
            "model.lr=3e-4",
        ],
        tmp_path,
    )
    assert "Joblib.Parallel(" in proc.stdout + proc.stderr
    (sweep,) = list((tmp_path / "out" / "sweeps").iterdir())
    runs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert [p.name for p in runs] == ["0_simple-s0", "1_simple-s1", "2_simpler-s0", "3_simpler-s1"]
    test_ids = []
    for run in runs:
        rows = list(csv.DictReader(open(run / "split.csv")))
        test_ids.append([r["image_id"] for r in rows if r["split"] == "test"])
        assert open_store(run).image_ids == test_ids[-1]
    assert all(ids == test_ids[0] for ids in test_ids) and test_ids[0]
    # Two jobs ran at once: the second started before the first finished.
    started = {p.name: (p / ".hydra" / "config.yaml").stat().st_mtime for p in runs}
    finished = {p.name: (p / "metrics.json").stat().st_mtime for p in runs}
    assert started["1_simple-s1"] < finished["0_simple-s0"]
    # Residuals only against runs that had finished when the run compared.
    for run in runs:
        for row in pd.read_csv(run / VARIANT / "residuals.csv").itertuples():
            assert finished[row.run_b] <= (run / VARIANT / "residuals.csv").stat().st_mtime
    pairs = pd.read_csv(sweep / "report" / "table2.csv")
    assert len(pairs) == 6 and pairs["group"].value_counts().to_dict() == {"architecture": 4, "seed": 2}
    assert len(list((tmp_path / "cache").glob("synthetic-*"))) == 1
    assert not list((tmp_path / "cache").glob(".synthetic-*"))
    assert len(list((tmp_path / "cache").glob("views-*/"))) == 1
    assert len(list((tmp_path / "cache" / "labels").iterdir())) == 1


def compose_hydra(conf_dir, overrides: list[str]):
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_launcher_configs_extend_the_plugins_configs(conf_dir):
    launcher = compose_hydra(conf_dir, ["hydra/launcher=parallel"]).hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_hydra(
        conf_dir, ["hydra/launcher=slurm", "trainer=slurm", "trainer.num_nodes=2", "trainer.devices=4"]
    )
    slurm = cfg.hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.nodes, slurm.tasks_per_node, slurm.gpus_per_node) == (2, 4, 4)
    local = compose_hydra(conf_dir, ["hydra/launcher=slurm_local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.tasks_per_node == 1


def test_trainer_configs_for_ddp_and_slurm(compose_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for module in (rank_zero, utils_rank_zero):
        monkeypatch.setattr(module.rank_zero_only, "rank", module.rank_zero_only.rank)
    cpu_only = ["trainer.accelerator=cpu", "trainer.precision=32-true"]
    trainer = instantiate(compose_cfg(["trainer=ddp_cpu"], tmp_path, tmp_path).trainer, logger=False)
    assert trainer.world_size == 2 and trainer.strategy._get_process_group_backend() == "gloo"
    cfg = compose_cfg(["trainer=ddp", "trainer.devices=2", *cpu_only], tmp_path, tmp_path)
    assert instantiate(cfg.trainer, logger=False).strategy._timeout.total_seconds() == 7200
    slurm_env = {
        "SLURM_NTASKS": "4",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_JOB_NAME": "citylens",
        "SLURM_NODELIST": "gpu[1-2]",
        "SLURM_JOB_ID": "7",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
    }
    for key, value in slurm_env.items():
        monkeypatch.setenv(key, value)
    cfg = compose_cfg(
        ["trainer=slurm", "trainer.devices=2", "trainer.num_nodes=2", *cpu_only], tmp_path, tmp_path
    )
    trainer = instantiate(cfg.trainer, logger=False)
    assert type(trainer.strategy.cluster_environment).__name__ == "SLURMEnvironment"
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (3, 1, 1, 4)
    assert not trainer.is_global_zero
