"""Benchmark streaming all-pairs residuals: peak memory must not grow with the number of images.

Runs PairwiseResiduals over 8 runs x N synthetic 224x224 masks in chunks of 256, one subprocess per N (so
each peak RSS, from resource.getrusage ru_maxrss, is that N's alone): N = 2,000 and 20,000 by default
(--sizes); the larger run also reports its time at half its images. Masks are made per chunk from a few
Grad-CAM-like base chunks (7x7 noise upsampled bilinearly, min-max normalised) scaled per run, so no
N-sized mask array ever exists.
Usage: python bench/bench_residuals.py [--device cuda] [--threads 2] [--sizes 2000 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RUNS = 8
CHUNK = 256
SIDE = 224
N_BASES = 3


def _child(n: int, mark: int, device: str, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from citylens.analysis.residuals import PairwiseResiduals

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    bases = []
    for _ in range(N_BASES):
        low = torch.rand((CHUNK, 1, 7, 7), generator=gen)
        m = F.interpolate(low, size=(SIDE, SIDE), mode="bilinear", align_corners=False)[:, 0]
        lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
        bases.append(((m - lo) / (hi - lo + 1e-7)).to(device))
    buffers = [torch.empty_like(bases[0]) for _ in range(RUNS)]
    pr = PairwiseResiduals([f"run{r}" for r in range(RUNS)])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    make_s = update_s = 0.0
    marks: dict[str, float] = {}
    bounds = sorted(set(range(0, n, CHUNK)) | ({mark} if mark < n else set()) | {n})
    start = time.perf_counter()
    for u, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        t0 = time.perf_counter()
        chunks = []
        for r in range(RUNS):
            torch.mul(bases[(u + r) % N_BASES], 1.0 - 0.05 * r, out=buffers[r])
            chunks.append(buffers[r][: e - s])
        t1 = time.perf_counter()
        pr.update(chunks)
        if device != "cpu":
            torch.cuda.synchronize()
        make_s += t1 - t0
        update_s += time.perf_counter() - t1
        if e == mark:
            marks = {"residual_s_at_mark": update_s, "total_s_at_mark": time.perf_counter() - start}
    total_s = time.perf_counter() - start
    assert pr.n_images == n
    return {
        "n": n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_stream_mb": rss_before / 1024,
        "total_s": total_s,
        "residual_s": update_s,
        "make_masks_s": make_s,
        "mean_ar": sum(pr.average().values()) / len(pr.pairs),
        **marks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a shared CPU)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        default=[2_000, 20_000],
        metavar=("SMALL", "LARGE"),
        help="images per run",
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    small, large = args.sizes
    mark = large // 2
    if args.child is not None:
        print(json.dumps(_child(args.child, mark, args.device, args.threads)))
        return
    pairs = RUNS * (RUNS - 1) // 2
    results = {}
    for n in (small, large):
        cmd = [sys.executable, __file__, "--child", str(n), "--device", args.device]
        cmd += ["--threads", str(args.threads), "--sizes", str(small), str(large)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = results[n] = json.loads(out.strip().splitlines()[-1])
        print(
            f"N={n:>6}: peak RSS {r['peak_rss_mb']:7.1f} MB"
            f" (before streaming {r['rss_before_stream_mb']:.1f} MB);"
            f" {RUNS} runs / {pairs} pairs: total {r['total_s']:.1f} s, residuals {r['residual_s']:.1f} s,"
            f" making masks {r['make_masks_s']:.1f} s",
            flush=True,
        )
    ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    print(
        f"peak RSS N={large:,} / N={small:,}: {ratio:.3f} (target <= 1.3) {'OK' if ratio <= 1.3 else 'OVER'}"
    )
    r = results[large]
    print(
        f"wall time {RUNS} runs x {mark:,} images ({args.device}, {args.threads} thread(s)): residuals"
        f" {r['residual_s_at_mark']:.1f} s ({RUNS * mark / r['residual_s_at_mark']:.0f} masks/s),"
        f" with mask making {r['total_s_at_mark']:.1f} s"
    )


if __name__ == "__main__":
    main()
