"""Data pipeline throughput next to the models' training-step rate, at 224x224 on this machine.

    python bench/bench_data.py [--images 400] [--size 224] [--batch 32] [--workers 2]

Prints the preprocessing-cache build rate (JPEG decode + analysis view, `--workers` processes), the
training loader's rate (memory-mapped views -> normalised, flipped tensors), and each architecture's
training-step rate (forward, backward, Adam) at the same batch size, all measured in this one run. The
loader must outpace the training step of Simple and Simpler (the fastest models) for the CPU to be busy
training rather than waiting on data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from citylens.core.layers import ARCHITECTURES
from citylens.data import FolderCityData
from citylens.data.synthetic import generate
from citylens.models import build_model


def train_step_rate(arch: str, size: int, batch: int, steps: int) -> float:
    """Images/s of forward + backward + Adam step on random inputs (best of `steps` timed steps)."""
    network = build_model(arch, 2, size)
    optimizer = torch.optim.Adam(network.parameters(), 1e-4)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch,))
    best = float("inf")
    for i in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()
        if i:
            best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="images per city")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cities"
        generate(root, images_per_city=args.images, size=args.size, workers=args.workers, progress=False)
        dm = FolderCityData(
            root=str(root),
            input_size=args.size,
            cache_dir=str(Path(tmp) / "cache"),
            batch_size=args.batch,
            num_workers=0,
        )
        n = len(dm.find_records())
        start = time.perf_counter()
        dm.cache.build(workers=args.workers, progress=False)
        cache_rate = n / (time.perf_counter() - start)
        dm.setup()
        loader = dm.train_dataloader()
        start, seen = time.perf_counter(), 0
        for x, _ in loader:
            seen += len(x)
        loader_rate = seen / (time.perf_counter() - start)
    print(f"{args.size}x{args.size}, batch {args.batch}, {torch.get_num_threads()} torch threads")
    print(f"preprocessing cache build ({args.workers} workers): {cache_rate:8.1f} img/s")
    print(f"training loader (0 workers):            {loader_rate:8.1f} img/s")
    print(f"{'model':10s} {'train step img/s':>17s} {'loader / step':>14s}")
    for arch in ARCHITECTURES:
        rate = train_step_rate(arch, args.size, args.batch, args.steps)
        print(f"{arch:10s} {rate:17.1f} {loader_rate / rate:13.1f}x")


if __name__ == "__main__":
    main()
