"""Cost of the concept analysis per test image, as a ratio to one forward pass, per architecture and size.

    python bench/bench_concepts.py [--quick] [--sizes 64 224] [--archs vgg11 ...] [--images 16] [--k 12]
                                   [--fit-images 32] [--threads 1] [--clock cpu|wall]

On a random-weight network of each architecture (citylens.analysis.concepts, docs/concepts.md), at the
concept layer one stage before the last conv (EARLIER_LAYERS), it times on the same random images:
- forward: one forward pass (no gradients);
- maps: the layer's activations and the concept maps with the bank fixed (NNLS);
- importance: the removal of each of the k concepts (one pass to the layer, k + 1 passes after it);
- fit: NMF of `--fit-images` images' activations into k concepts (once per run, on the validation split).
Printed per row: ms per image of each, and `concepts/forward`, the cost of maps + importance per test image
over one forward pass. Each is the best of `--repeats` calls (the best, because the CPU may be shared); the
clock is this process's CPU time by default, blind to other jobs on a shared machine. `--quick`: 2 images,
k = 3, one repeat, NMF on 2000 locations (a smoke run, numbers not meaningful).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable

import torch
from sklearn.exceptions import ConvergenceWarning

from citylens.analysis.concepts import (
    EARLIER_LAYERS,
    concept_importance,
    concept_maps,
    fit_concepts,
    layer_activations,
)
from citylens.core.layers import ARCHITECTURES
from citylens.models import build_model


def best_seconds(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    """The fastest of `repeats` calls of fn, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def bench_one(arch: str, size: int, args: argparse.Namespace, clock: Callable[[], float]) -> dict[str, float]:
    """ms per image of forward, maps, importance, and seconds of the fit, for one architecture and size."""
    torch.manual_seed(0)
    network = build_model(arch, 2, input_size=size).eval()
    layer = EARLIER_LAYERS[arch]
    images = torch.randn(args.images, 3, size, size)
    fit_images = torch.randn(args.fit_images, 3, size, size)
    targets = torch.zeros(args.images, dtype=torch.long)
    fit_acts = layer_activations(network, layer, fit_images, args.batch)
    bank = fit_concepts(fit_acts, args.k, seed=0, max_locations=args.max_locations)
    maps = concept_maps(layer_activations(network, layer, images, args.batch), bank)

    def forward() -> object:
        with torch.no_grad():
            return [network(images[i : i + args.batch]) for i in range(0, len(images), args.batch)]

    def fit() -> object:
        acts = layer_activations(network, layer, fit_images, args.batch)
        return fit_concepts(acts, args.k, seed=0, max_locations=args.max_locations)

    def make_maps() -> object:
        return concept_maps(layer_activations(network, layer, images, args.batch), bank)

    def importance() -> object:
        return concept_importance(network, layer, images, targets, bank, maps, args.importance_batch)

    per_image = 1000 / args.images
    return {
        "forward": best_seconds(forward, args.repeats, clock) * per_image,
        "maps": best_seconds(make_maps, args.repeats, clock) * per_image,
        "importance": best_seconds(importance, args.repeats, clock) * per_image,
        "fit": best_seconds(fit, 1, clock),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 images, k = 3, one repeat, 2000 locations: a smoke run"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--archs", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--images", type=int, default=16, help="test images timed per call")
    parser.add_argument("--fit-images", type=int, default=32, help="validation images the bank is fitted on")
    parser.add_argument("--k", type=int, default=12, help="concepts")
    parser.add_argument("--max-locations", type=int, default=100_000, help="image locations NMF sees")
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass")
    parser.add_argument("--importance-batch", type=int, default=8, help="images per removal pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.images, args.fit_images, args.k, args.repeats, args.max_locations = 2, 2, 3, 1, 2000
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # random weights: NMF may stop at max_iter
    print(
        f"Concept analysis per test image against one forward pass ({args.clock} time; cpu, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; random weights, "
        f"k = {args.k}, {args.images} test images, fit on {args.fit_images}, best of {args.repeats})"
    )
    columns = ("forward", "maps", "importance", "concepts/forward", "fit")
    header = f"{'model':<9} {'size':>4} {'layer':<12} " + " ".join(f"{c:>16}" for c in columns)
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for arch in args.archs:
            t = bench_one(arch, size, args, clock)
            ratio = (t["maps"] + t["importance"]) / t["forward"]
            print(
                f"{arch:<9} {size:>4} {EARLIER_LAYERS[arch]:<12} {t['forward']:>13.2f} ms "
                f"{t['maps']:>13.2f} ms {t['importance']:>13.2f} ms {ratio:>15.1f}x {t['fit']:>15.2f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
