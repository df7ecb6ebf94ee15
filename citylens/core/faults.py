"""Named kill points for the fault suite: `CITYLENS_KILL_AT=<point>` makes the process SIGKILL itself there.

The fault tests (tests/test_faults.py) need a kill at an exact phase (mid-epoch, mid-checkpoint-write, during
the analysis, generation, cache build or report) that a timer cannot hit reliably on a busy machine. The
kill is a real SIGKILL of the real process, so nothing (no `finally`, no atexit) runs after it.
`CITYLENS_KILL_AFTER=N` lets the point pass N times first. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if CITYLENS_KILL_AT names this point (after CITYLENS_KILL_AFTER passes)."""
    if os.environ.get("CITYLENS_KILL_AT") != name:
        return
    count = _passed.get(name, 0)
    _passed[name] = count + 1
    if count >= int(os.environ.get("CITYLENS_KILL_AFTER", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
