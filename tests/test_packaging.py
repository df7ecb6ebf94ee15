"""A non-editable wheel carries its configs: the three CLIs run from another directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_runs_the_three_clis_from_another_directory(tmp_path: Path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("citylens-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert (target / "citylens" / "conf" / "train.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import citylens.app.train as t; print(t.__file__); print(t.CONF_DIR)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        check=True,
    ).stdout.split()
    assert where == [str(target / "citylens" / "app" / "train.py"), str(target / "citylens" / "conf")]
    for cli, expected in (
        ("citylens-train", "== Configuration groups =="),
        ("citylens-analyze", "citylens-analyze RUN_DIR"),
        ("citylens-report", "usage: citylens-report"),
    ):
        out = subprocess.run(
            [str(target / "bin" / cli), "--help"], capture_output=True, text=True, env=env, cwd=elsewhere
        )
        assert out.returncode == 0, (cli, out.stderr[-2000:])
        assert expected in out.stdout, (cli, out.stdout[:500])
