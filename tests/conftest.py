"""Shared fixtures: Hydra config composition and a session-wide data cache (so data is generated once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

CONF = Path(__file__).resolve().parents[1] / "conf"
# Real street photos with their sources and licences (tests/data/real/README.md, SOURCES.tsv).
REAL = Path(__file__).resolve().parent / "data" / "real"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


def compose_cfg(overrides: list[str], run_dir: Path, cache_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as citylens-train would, with the run dir and cache in temp folders."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(
            "train", overrides=[f"paths.run_dir={run_dir}", f"paths.cache_dir={cache_dir}", *overrides]
        )


def write_folder_dataset(root: Path, cities: dict[str, int], size: tuple[int, int] = (80, 60)) -> None:
    """Write a tiny folder dataset of random JPEGs/PNGs: root/<city>/<sub>/<i>.jpg, colour-coded by city."""
    rng = np.random.default_rng(0)
    for c, (city, count) in enumerate(cities.items()):
        for i in range(count):
            path = root / city / f"part{i % 2}" / f"{city}_{i:03d}.{'png' if i % 3 == 0 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., c % 3] = 255
            Image.fromarray(pixels).save(path)


def wandb_record(run_file: Path) -> dict:
    """What an offline W&B run file holds (state, name, config, summary), read with `wandb leet inspect`."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out)


def wandb_records(run_file: Path) -> list[dict]:
    """Every record of an offline W&B run file (run, metric, summary, artifact...): `wandb leet inspect`."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def run_cli(args: list[str], root: Path, timeout: int = 900, **env_vars: str) -> subprocess.CompletedProcess:
    """`python -m citylens.train ARGS` with outputs and caches under `root`; fails the test on error."""
    env = {
        **os.environ,
        **env_vars,
        "CITYLENS_OUTPUTS": str(root / "out"),
        "CITYLENS_CACHE": str(root / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    cmd = [sys.executable, "-m", "citylens.train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc
