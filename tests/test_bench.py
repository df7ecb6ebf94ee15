"""Every benchmark of `make bench` still runs against the current code, at a tiny size (no timing asserted:
speed is measured by `make bench` itself, never by a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

# script -> (tiny arguments, a line fragment its result must print)
TINY = {
    "bench_causal.py": (["--archs", "simple", "--images-per-city", "30", "--size", "32"], "causal/rest"),
    "bench_concepts.py": (["--quick"], "concepts/forward"),
    "bench_data.py": (["--images", "8", "--size", "32", "--batch", "4", "--workers", "1"], "img/s"),
    "bench_explorer.py": (["--images", "12", "--runs", "2"], "explorer.html"),
    "bench_gpu.py": (
        ["--device", "cpu", "--arch", "simple", "--size", "32", "--batch", "4", "--images-per-city", "20"]
        + ["--steps", "2", "--warmup", "1", "--repeats", "1", "--segmenter", "ground_truth"],
        "forward passes/image",
    ),
    "bench_gradcam.py": (
        ["--size", "32", "--batch", "2", "--models", "simple", "--methods", "gradcam"],
        "gradcam",
    ),
    "bench_resolution.py": (
        ["--archs", "simple", "--sizes", "32", "--seeds", "0", "--explainers", "gradcam", "ixg"]
        + ["--out", "res", "--override", "data.images_per_city=30", "trainer.max_epochs=1"]
        + ["analysis.steps.faithfulness.sanity=false"],
        "faithfulness against the counterfactual effects",
    ),
    "bench_memory.py": (["--archs", "simple", "--size", "32", "--steps", "2", "--rounds", "2"], "| yes |"),
    "bench_residuals.py": (["--sizes", "300", "600"], "peak RSS N=600 / N=300"),
    "bench_synthetic.py": (["--images", "4"], "img/s"),
    "bench_train_cpu.py": (
        ["--quick", "--archs", "simple", "--settings", "bf16", "cl", "workers1"],
        "x fp32",
    ),
}


def test_every_benchmark_is_listed():
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(TINY)


def _run(script: str, args: list[str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("script", sorted(set(TINY) - {"bench_resolution.py"}))
def test_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path):
    args, expected = TINY[script]
    out = _run(script, args, tmp_path)
    assert expected in out, out[-3000:]


def test_resolution_runs_at_a_tiny_size_and_reads_a_finished_sweep(tmp_path: Path):
    """The tiny sweep, then --read of its folder: the same faithfulness table, no second sweep run."""
    args, expected = TINY["bench_resolution.py"]
    ran = _run("bench_resolution.py", args, tmp_path)
    assert expected in ran, ran[-3000:]
    read = _run("bench_resolution.py", ["--read", "32=res/size-32", "--out", "again"], tmp_path)
    assert "sweep read from" in read and not (tmp_path / "again" / "size-32.log").exists()
    assert (tmp_path / "again" / "resolution.csv").read_text() == (
        tmp_path / "res" / "resolution.csv"
    ).read_text()
