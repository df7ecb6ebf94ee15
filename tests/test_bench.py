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
    "bench_residuals.py": (["--sizes", "300", "600"], "peak RSS N=600 / N=300"),
    "bench_synthetic.py": (["--images", "4"], "img/s"),
    "bench_train_cpu.py": (
        ["--quick", "--archs", "simple", "--settings", "bf16", "cl", "workers1"],
        "x fp32",
    ),
}


def test_every_benchmark_is_listed():
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(TINY)


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path):
    args, expected = TINY[script]
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-3000:]
