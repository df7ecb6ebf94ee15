"""Explorer size and load time: a demo-sized sweep (8 runs x 280 test images), a paper-sized one (8 x 30,000).

The sweeps are simulated: mask stores of random 7x7 Grad-CAM maps, a t-SNE table, object ratios at three
thresholds over 40 objects, and smooth random 224 px views (blurred noise, which JPEG compresses about as
well as street scenes at 96 px). Prints the build time, the size of explorer.html and of its thumbnail
atlases, and the load time in headless Chromium (navigation start to the first view drawn), then the time to
switch to each other view. Needs Debian's chromium and chromium-driver and selenium (the dev extra) for the
load times; without them it prints the sizes only.

    python bench/bench_explorer.py [--images 280 30000] [--runs 8]   (default 280; 30000 takes ~17 min)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from citylens.analysis.residuals import PairwiseResiduals
from citylens.core.run_folder import write_complete
from citylens.explain.store import write_store
from citylens.pipeline import Variant
from citylens.pipeline.runs import scan_sweep
from citylens.report.browser import find_chromium, headless_chromium
from citylens.report.explorer import ASSET_DIR, build_explorer

CITIES = ["pittsburgh", "tokyo"]
VARIANT = Variant()
ARCHS = ["vgg11", "resnet18", "simple", "simpler"]


def simulate_sweep(root: Path, n_images: int, n_runs: int, size: int = 224) -> Path:
    """A multirun folder of n_runs finished runs over the same n_images test images (the default variant)."""
    rng = np.random.default_rng(0)
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    ids = [f"{CITIES[i % 2]}/img{i:06d}" for i in range(n_images)]
    targets = np.arange(n_images) % 2
    objects = [f"object{k}" for k in range(40)]
    for r in range(n_runs):
        arch, seed = ARCHS[r // 2 % len(ARCHS)], r % 2
        run = sweep / f"{r}_{arch}-s{seed}"
        out = VARIANT.dir(run)
        low = rng.random((n_images, 7, 7), dtype=np.float32)
        low /= low.reshape(n_images, -1).max(axis=1)[:, None, None]
        probs = rng.dirichlet([1, 1], n_images).astype(np.float32)
        provenance = {
            "arch": arch,
            "seed": seed,
            "input_size": size,
            "city_names": CITIES,
            **VARIANT.to_dict(),
        }
        write_store(out / "masks", low, probs, targets, ids, [CITIES[t] for t in targets], provenance)
        (run / "metrics.json").write_text(json.dumps({"arch": arch, "seed": seed, "test/acc": 0.9}))
        pd.DataFrame(
            {
                "image_id": ids,
                "city": [CITIES[t] for t in targets],
                "x": rng.normal(size=n_images) + 4 * targets,
                "y": rng.normal(size=n_images),
            }
        ).to_csv(out / "tsne.csv", index=False)
        rows = [
            (t, c, o, k, rng.random(), True)
            for t in (0.3, 0.5, 0.7)
            for c in CITIES
            for k, o in enumerate(objects)
        ]
        pd.DataFrame(rows, columns=["threshold", "city", "object", "object_id", "ratio", "kept"]).to_csv(
            out / "object_ratios.csv", index=False
        )
        write_complete(run, {"written_by": "bench_explorer"})  # last, as a run writes it
    return sweep


def smooth_views(image_ids: list[str], size: int = 224) -> np.ndarray:
    """Deterministic smooth uint8 views: 8x8 noise upsampled bilinearly, plus a little grain."""
    rng = np.random.default_rng(int(image_ids[0].rsplit("img", 1)[1]))
    coarse = torch.from_numpy(rng.random((len(image_ids), 3, 8, 8), dtype=np.float32) * 230)
    up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    views = up.byte().permute(0, 2, 3, 1).numpy()
    return views + rng.integers(0, 24, views.shape, dtype=np.uint8)


def residuals(runs: list, side: int = 28) -> PairwiseResiduals:
    """Per-image residuals at a coarse side: their values do not change the page's size or speed."""
    pairs = PairwiseResiduals([r.name for r in runs])
    for parts in zip(*(r.store.chunks(1024, size=side) for r in runs)):
        pairs.update([m for _, m in parts])
    return pairs


def load_times(page: Path) -> dict[str, float] | None:
    """Seconds to the first view in headless Chromium, then to switch to each view (None without Chromium)."""
    if find_chromium() is None:
        return None
    driver = headless_chromium()
    try:
        driver.set_page_load_timeout(600)
        driver.get(page.as_uri())
        for _ in range(6000):
            if driver.execute_script("return window.explorerReady === true"):
                break
            time.sleep(0.1)
        out = {"first view (Map)": driver.execute_script("return window.explorerLoadMs") / 1000}
        for view in ("image", "objects", "pairs", "map"):
            t = driver.execute_script(
                "const t = performance.now();"
                f"document.querySelector('#tabs button[data-view={view}]').click();"
                "return performance.now() - t;"
            )
            out[f"switch to {view}"] = t / 1000
        t = driver.execute_script(
            "const t = performance.now(); const s = document.getElementById('map-run');"
            "s.value = '1'; s.dispatchEvent(new Event('change')); return performance.now() - t;"
        )
        out["map: change run"] = t / 1000
        return out
    finally:
        driver.quit()


def bench(n_images: int, n_runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench_explorer_"))
    try:
        sweep = simulate_sweep(root, n_images, n_runs)
        runs, _ = scan_sweep(sweep)
        start = time.perf_counter()
        pairs = residuals(runs)
        page = build_explorer(runs, root / "report", pairs, pd.DataFrame(), 0.5, views=smooth_views)
        built = time.perf_counter() - start
        atlases = list((root / "report" / ASSET_DIR).glob("*.jpg"))
        mb = lambda n: f"{n / 2**20:.1f} MB"
        print(
            f"{n_runs} runs x {n_images} images: built in {built:.1f} s; "
            f"explorer.html {mb(page.stat().st_size)}; "
            f"thumbnails {len(atlases)} atlases, {mb(sum(p.stat().st_size for p in atlases))}"
        )
        times = load_times(page)
        if times is None:
            print("  (no headless Chromium: load times not measured)")
        else:
            print("  " + "; ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[280])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    for n in args.images:
        bench(n, args.runs)


if __name__ == "__main__":
    main()
