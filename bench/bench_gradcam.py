"""Throughput of each citylens CAM method against a forward pass and pytorch-grad-cam's same-named class.

    python bench/bench_gradcam.py [--size 224] [--batch 16] [--device cpu|cuda] [--repeats 1] [--threads 1]
                                  [--layer last_block] [--methods gradcam ...] [--models vgg11 ...]

Per architecture, the forward pass and, per method, ours and the reference are timed on the same
random-weight network, batch and input size in one run; each is warmed up, then the best of `--repeats`
timed calls is reported (the best, because the CPU may be shared). On a CPU the clock is this process's
CPU time by default (`--clock cpu`), so other jobs on a shared machine do not count; with one thread that
is the compute time of the call. One row per method x architecture.
Targets (docs/explainers.md): ours >= 0.85x forward and >= 2x pytorch-grad-cam on a 2-core CPU,
>= 0.9x and >= 8x on a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import pytorch_grad_cam
import torch

from citylens.core.layers import ARCHITECTURES
from citylens.explain import CAMS, build_explainer
from citylens.models import build_model

# pytorch-grad-cam's class of the same name as each of ours.
REFERENCES = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "hirescam": pytorch_grad_cam.HiResCAM,
    "gradcam++": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
}
TARGETS = {"cpu": (0.85, 2.0), "cuda": (0.9, 8.0)}


def best_rates(
    fns: dict[str, Callable[[], object]],
    batch: int,
    device: torch.device,
    warmup: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Images per second (of `clock`) of each function's fastest call after `warmup` untimed calls.

    The functions are timed round-robin, so a change in the load of a shared machine hits all alike.
    """

    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    for fn in fns.values():
        for _ in range(warmup):
            timed(fn)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for key, fn in fns.items():
            best[key] = min(best[key], timed(fn))
    return {key: batch / seconds for key, seconds in best.items()}


def bench_one(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Images/s of the forward pass and, per method, of ours and pytorch-grad-cam for one architecture."""
    torch.manual_seed(0)
    network = build_model(name, args.num_classes, input_size=args.size)
    network.to(device).eval()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def forward() -> object:
        with torch.no_grad():
            return network(images)

    def ours(method: str) -> Callable[[], object]:
        explainer = build_explainer(method, network, args.layer)
        return lambda: explainer(images)

    def reference(method: str) -> Callable[[], object]:
        layer = build_explainer(method, network, args.layer).target_layer

        def run() -> object:
            # Built per call (it only registers two hooks) so that its hooks never run in the other timings.
            with REFERENCES[method](network, [layer]) as cam:
                return cam(images, None)

        return run

    fns: dict[str, Callable[[], object]] = {"forward": forward}
    for method in args.methods:
        fns[f"ours {method}"] = ours(method)
        fns[f"pgc {method}"] = reference(method)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rates = best_rates(fns, args.batch, device, args.warmup, args.repeats, clock)
    network.zero_grad(set_to_none=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height = width in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (best is kept)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (0: torch's default); 1 is steadier on a busy CPU"
    )
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="cpu: this process's CPU time (blind to other jobs on a shared CPU; the default on cpu), "
        "wall: elapsed time (the default on cuda)",
    )
    parser.add_argument("--models", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--methods", nargs="+", choices=list(CAMS), default=list(CAMS))
    parser.add_argument(
        "--layer", default="last_block", help="a layer preset (or dotted path) for every model"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    args.clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # fp32 everywhere, as in the parity tests (docs/explainers.md: TF32 breaks 1e-5 parity).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    min_forward, min_reference = TARGETS[device.type]
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"CAM throughput, images per {args.clock} second ({where}; batch {args.batch}, "
        f"{args.size}x{args.size}, fp32, layer {args.layer}, best of {args.repeats})"
    )
    columns = ("forward", "ours", "pgc", "ours/fwd", "ours/pgc")
    header = f"{'model':<9} {'method':<10} " + " ".join(f"{c:>8}" for c in columns) + "  target"
    print(header)
    print("-" * len(header))
    for name in args.models:
        rates = bench_one(name, args, device)
        for method in args.methods:
            forward_rate, ours_rate, reference_rate = (
                rates["forward"],
                rates[f"ours {method}"],
                rates[f"pgc {method}"],
            )
            vs_forward, vs_reference = ours_rate / forward_rate, ours_rate / reference_rate
            met = "ok" if vs_forward >= min_forward and vs_reference >= min_reference else "MISSED"
            print(
                f"{name:<9} {method:<10} {forward_rate:>8.1f} {ours_rate:>8.1f} {reference_rate:>8.1f} "
                f"{vs_forward:>7.2f}x {vs_reference:>7.2f}x  {met} (>= {min_forward}x, >= {min_reference}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
