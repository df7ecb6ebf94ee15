"""Worker pools for CPU-only work (rendering, encoding images): forked where the OS allows, and stoppable."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import signal


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_pool(workers: int) -> multiprocessing.pool.Pool:
    """A Pool of `workers` processes for work that needs only NumPy and Pillow.

    Forked where the OS allows (a spawned worker re-imports the citylens package: torch and Lightning, many
    seconds). Each worker restores SIGTERM's default action: a handler the parent installed (Lightning's
    signal connector) would otherwise survive the fork, so Pool.terminate(), which leaving the pool's `with`
    block calls, could not stop an idle worker and the parent would wait for it forever.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=_default_sigterm)
