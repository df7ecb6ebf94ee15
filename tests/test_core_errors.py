"""ConfigError: a ValueError, and what an entry point makes of it (one line naming the key, exit status 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylens.core.errors import ConfigError


def test_a_config_error_is_a_value_error_with_its_message():
    with pytest.raises(ValueError, match=r"^data.input_size: must be >= 16, got -3$"):
        raise ConfigError("data.input_size: must be >= 16, got -3")
    # Entry points print a ConfigError as one line; any other ValueError is a bug and keeps its traceback.
    assert not isinstance(ValueError("x"), ConfigError)


def test_the_console_script_prints_one_line_naming_the_key_and_exits_2(run_cli, tmp_path: Path):
    proc = run_cli(["data.input_size=-3", "logger=none"], tmp_path, timeout=300, code=2, script=True)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].endswith("data.input_size: must be >= 16, got -3") and "Traceback" not in lines[0]
    # Refused before any data work: no dataset was generated.
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
