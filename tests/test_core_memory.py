"""reuse_freed_memory: a large gradient freed and allocated again each training step comes back without page
faults; without it, glibc unmaps it on free and the kernel faults every page in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from citylens.core import memory

# Training steps of a linear layer with a 128 MB weight, whose gradient is allocated anew each step and freed
# by zero_grad: four steps to settle (glibc's aligned allocations need a few bytes more than the block just
# freed, so the heap may grow by a block or two first), then the page faults of five more.
SCRIPT = """
import resource, sys
import torch
from citylens.core.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
layer = torch.nn.Linear(8192, 4096, bias=False)
optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
x = torch.randn(8, 8192)
def step():
    optimizer.zero_grad(set_to_none=True)
    layer(x).square().mean().backward()
    optimizer.step()
for _ in range(4):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 128 * 2**20 // 4096  # of the gradient
GLIBC = pytest.mark.skipif(
    sys.platform != "linux" or not memory.platform.libc_ver()[0] == "glibc", reason="mallopt is glibc's"
)


def faults(mode: str) -> int:
    """Minor page faults of five training steps after four in a fresh process under `mode`."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@GLIBC
def test_a_freed_large_tensor_is_reused_without_page_faults():
    assert faults("default") > 4 * PAGES  # glibc's default: unmapped on free, faulted in again every step
    assert faults("reuse") < 3 * PAGES // 2  # reused: at most one late step still grows the heap


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert memory.reuse_freed_memory() is False
