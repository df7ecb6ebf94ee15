"""Throughput of citylens Grad-CAM against a plain forward pass and pytorch-grad-cam, per architecture.

    python bench/bench_gradcam.py [--size 224] [--batch 16] [--device cpu|cuda] [--repeats 3] [--threads N]

All three are timed on the same random-weight network, batch and input size in one run; each is warmed
up, then the best of `--repeats` timed calls is reported (the best, because the CPU may be shared).
Targets (docs/gradcam.md, anchors): ours >= 0.85x forward and >= 2x pytorch-grad-cam on a 2-core CPU,
>= 0.9x and >= 8x on a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM

from citylens.explain import GradCAM
from citylens.models import ARCHITECTURES, build_model

TARGETS = {"cpu": (0.85, 2.0), "cuda": (0.9, 8.0)}


def best_rates(
    fns: dict[str, Callable[[], object]], batch: int, device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Images per second of each function's fastest call after `warmup` untimed calls.

    The functions are timed round-robin, so a change in the load of a shared machine hits all alike.
    """

    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for fn in fns.values():
        for _ in range(warmup):
            timed(fn)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            best[key] = min(best[key], timed(fn))
    return {key: batch / seconds for key, seconds in best.items()}


def bench_one(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Images/s of the forward pass, our Grad-CAM and pytorch-grad-cam for one architecture."""
    torch.manual_seed(0)
    network, layer = build_model(name, args.num_classes, input_size=args.size)
    network.to(device).eval()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    ours = GradCAM(network, layer)

    def forward() -> object:
        with torch.no_grad():
            return network(images)

    def reference() -> object:
        # Built per call (it only registers two hooks) so that its hooks never run in the other timings.
        with ReferenceGradCAM(network, [layer]) as cam:
            return cam(images, None)

    rates = best_rates(
        {"forward": forward, "ours": lambda: ours(images), "pgc": reference},
        args.batch,
        device,
        args.warmup,
        args.repeats,
    )
    network.zero_grad(set_to_none=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height = width in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (best is kept)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: torch's default); 1 is steadier on a busy CPU"
    )
    parser.add_argument("--models", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # fp32 everywhere, as in the parity tests (docs/gradcam.md: TF32 breaks 1e-5 parity).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    min_forward, min_reference = TARGETS[device.type]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"Grad-CAM throughput, images/s ({where}; batch {args.batch}, {args.size}x{args.size}, fp32, "
        f"best of {args.repeats})"
    )
    header = f"{'model':<9} {'forward':>9} {'ours':>9} {'pgc':>9} {'ours/fwd':>9} {'ours/pgc':>9}  target"
    print(header)
    print("-" * len(header))
    for name in args.models:
        rates = bench_one(name, args, device)
        forward_rate, ours_rate, reference_rate = rates["forward"], rates["ours"], rates["pgc"]
        vs_forward, vs_reference = ours_rate / forward_rate, ours_rate / reference_rate
        met = "ok" if vs_forward >= min_forward and vs_reference >= min_reference else "MISSED"
        print(
            f"{name:<9} {forward_rate:>9.1f} {ours_rate:>9.1f} {reference_rate:>9.1f} "
            f"{vs_forward:>8.2f}x {vs_reference:>8.2f}x  {met} (>= {min_forward}x, >= {min_reference}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
