"""Training steps with glibc's default allocation against `reuse_freed_memory` (conf `reuse_freed_memory`).

    python bench/bench_memory.py [--archs vgg11 resnet18 simple simpler] [--size 64] [--steps 12] [--rounds 3]

Each (arch, round) runs two fresh processes in turn, one with glibc's defaults and one after
`citylens.core.memory.reuse_freed_memory()`; each trains `steps` steps of the demo's step (batch 16, fused
Adam, random inputs: the loader is under 1% of a step, docs/speed.md) after two untimed ones, and reports its
wall and kernel (system) seconds per step, page faults per step, peak resident memory and the last loss. The
setting is per process, hence the processes; the order alternates between rounds, and the ratio is taken
within a round. The last losses must agree to the last bit: the setting changes where memory comes from, not
what is computed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MODES = ("default", "reuse")
NUMBERS = ("wall", "sys", "faults", "rss_mb")


def child(arch: str, size: int, steps: int, mode: str) -> None:
    """Train `steps` timed steps of `arch` under `mode`; print one JSON line of the measurements."""
    if mode == "reuse":
        from citylens.core.memory import reuse_freed_memory

        if not reuse_freed_memory():
            raise SystemExit("reuse_freed_memory: not glibc, nothing to measure")
    import torch

    from citylens.models import CityClassifier

    torch.manual_seed(0)
    module = CityClassifier(arch, 2, size, lr=1e-4).train()
    optimizer = module.configure_optimizers()["optimizer"]
    x, y = torch.randn(16, 3, size, size), torch.randint(0, 2, (16,))

    def step() -> float:
        loss = module.loss(module(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    step(), step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        loss = step()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall": wall / steps,
                "sys": (after.ru_stime - before.ru_stime) / steps,
                "faults": (after.ru_minflt - before.ru_minflt) / steps,
                "rss_mb": after.ru_maxrss / 1024,
                "loss": loss.hex(),
            }
        )
    )


def measure(arch: str, size: int, steps: int, mode: str) -> dict:
    """One child process's measurements."""
    cmd = [sys.executable, __file__, "--child", arch, str(size), str(steps), mode]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", nargs="+", default=["vgg11", "resnet18", "simple", "simpler"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        arch, size, steps, mode = args.child
        child(arch, int(size), int(steps), mode)
        return
    print(f"{args.size} px, batch 16, {args.steps} steps per process, {args.rounds} rounds (s: per step)")
    print(
        "| arch | default s | reuse s | speed-up (median, range) | sys s default / reuse "
        "| faults default / reuse | peak MB default / reuse | same loss |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                runs[mode].append(measure(arch, args.size, args.steps, mode))
        ratios = [d["wall"] / u["wall"] for d, u in zip(runs["default"], runs["reuse"], strict=True)]

        med = {(m, k): statistics.median(r[k] for r in runs[m]) for m in MODES for k in NUMBERS}
        same = "yes" if len({r["loss"] for r in runs["default"] + runs["reuse"]}) == 1 else "NO"
        print(
            f"| {arch} | {med['default', 'wall']:.3f} | {med['reuse', 'wall']:.3f} | "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{med['default', 'sys']:.3f} / {med['reuse', 'sys']:.3f} | "
            f"{med['default', 'faults']:.0f} / {med['reuse', 'faults']:.0f} | "
            f"{med['default', 'rss_mb']:.0f} / {med['reuse', 'rss_mb']:.0f} | {same} |"
        )
    print("speed-up: default wall / reuse wall per step, within a round")


if __name__ == "__main__":
    main()
