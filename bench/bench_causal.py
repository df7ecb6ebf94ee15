"""Cost of the causal analysis against the rest of a demo-sized run's analysis, per architecture.

    python bench/bench_causal.py [--archs resnet18 simple] [--images-per-city 700] [--size 64] [--threads N]

The demo's data (synthetic cities, 700 images per city at 64 px: 280 test images) and a random-weight network
of each architecture; in one run it times, on the same test images:
- the rest of the analysis: Grad-CAM + mask store (`compute_maps` + `write_variant_store`), label maps +
  object ratios (`Context.label_maps` + `object_ratios`), and the same with t-SNE and the figures (the
  explain and objects steps, as a run runs them);
- the causal analysis (the causal step: counterfactual scenes
  and deletion of every present object, bootstrap intervals, causal.csv and causal_agreement.csv) with a cold
  counterfactual render cache (the first run of a sweep: it renders the scenes into the cache) and a warm one
  (every later run: forward passes only);
- every other step of the demo's analysis, as a demo run runs it: the concepts and faithfulness steps of the
  run's Grad-CAM variant, and the explain, objects and faithfulness steps of its occlusion variant
  (`extra_variants: [occlusion]` in conf/experiment/demo.yaml).
Printed: test images/s of the causal analysis, and its cost over the rest with a warm cache (target <= 1.0,
issue 22) and with a cold one, against the Grad-CAM core, against explain+objects, and against the demo's
whole analysis."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from citylens.app.config import CONF_DIR, step_options
from citylens.data.datamodule import SyntheticCityData
from citylens.data.synthetic import DEFAULT_CITIES
from citylens.data.synthetic.counterfactuals import CACHE_FOLDER
from citylens.explain.store import open_store
from citylens.models.module import CityClassifier
from citylens.pipeline import Variant
from citylens.pipeline.context import Context
from citylens.pipeline.masks import compute_maps, store_provenance, write_variant_store
from citylens.pipeline.objects_step import object_ratios
from citylens.segment import GroundTruthSegmenter


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time is what a shared machine's load does not inflate."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ratios(context: Context) -> None:
    """Label maps (shared cache) and the object ratios of the run's store, as the objects step does."""
    store = open_store(context.out)
    labels = context.label_maps("objects", 64, store)
    object_ratios(store, labels, context.variant, [0.3, 0.5, 0.7], 100)


def gradcam_store(context: Context) -> None:
    """Grad-CAM of every test image into the default variant's mask store."""
    maps = compute_maps(context, 64)
    write_variant_store(context, maps, store_provenance(context))


OCCLUSION = Variant.from_dict(
    {
        **OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "explainer" / "occlusion.yaml")),
        "explainer": "occlusion",
    }
)
OCCLUSION_STEPS = ("explain", "objects", "faithfulness")


def bench_arch(arch: str, datamodule: SyntheticCityData, cache: Path) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of each part of the analysis for one random-weight network."""
    torch.manual_seed(0)
    module = CityClassifier(arch, datamodule.num_classes, datamodule.input_size).eval()
    segmenter = GroundTruthSegmenter(datamodule.input_size)
    test = datamodule.split_view("test")
    with tempfile.TemporaryDirectory() as tmp:
        fit = datamodule.split_view("val")
        context = Context(module.network, arch, test, Path(tmp), Variant(), segmenter, cache, 0, fit=fit)
        t = {"gradcam_store": timed(lambda: gradcam_store(context))}
        t["ratios"] = timed(lambda: ratios(context))
        t["explain_full"] = timed(lambda: step_options("explain").run(context))
        t["objects_full"] = timed(lambda: step_options("objects").run(context))
        # Rendering in this process (workers=0), so CPU time counts all of the causal analysis.
        causal = functools.partial(step_options("causal").run, context)
        shutil.rmtree(cache / CACHE_FOLDER, ignore_errors=True)
        t["causal_cold"] = timed(causal)
        t["causal_warm"] = timed(causal)
        t["concepts"] = timed(lambda: step_options("concepts").run(context))
        t["faithfulness"] = timed(lambda: step_options("faithfulness").run(context))
        occlusion = Context(module.network, arch, test, Path(tmp), OCCLUSION, segmenter, cache, 0, fit=fit)
        t["occlusion"] = timed(lambda: [step_options(s).run(occlusion) for s in OCCLUSION_STEPS])
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["vgg11", "resnet18", "simple", "simpler"])
    parser.add_argument("--images-per-city", type=int, default=700, help="the demo's 700")
    parser.add_argument("--size", type=int, default=64, help="the demo's 64 px")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        datamodule = SyntheticCityData(
            {city: {"planted": planted} for city, planted in DEFAULT_CITIES.items()},
            images_per_city=args.images_per_city,
            image_size=args.size,
            input_size=args.size,
            cache_dir=str(cache),
        )
        datamodule.setup()
        n = len(datamodule.splits["test"])
        print(f"causal analysis cost, {n} test images at {args.size} px, {torch.get_num_threads()} threads")
        for arch in args.archs:
            t = bench_arch(arch, datamodule, cache)
            for k, clock in enumerate(("wall", "CPU")):
                core = t["gradcam_store"][k] + t["ratios"][k]
                full = t["explain_full"][k] + t["objects_full"][k]
                whole = full + t["concepts"][k] + t["faithfulness"][k] + t["occlusion"][k]
                warm, cold = t["causal_warm"][k], t["causal_cold"][k]
                print(
                    f"{arch:9s} {clock:4s} causal {n / warm:6.1f} img/s warm ({warm:.1f} s; cold cache "
                    f"{cold:.1f} s) | rest: Grad-CAM+store+ratios {core:.1f} s, with t-SNE+figures "
                    f"{full:.1f} s | causal/rest {warm / core:.2f} warm, {cold / core:.2f} cold "
                    f"({warm / full:.2f} and {cold / full:.2f} with t-SNE+figures), share of the analysis "
                    f"{warm / (warm + full):.0%} warm (target causal/rest <= 1.0 warm)"
                )
                print(
                    f"{'':9s} {clock:4s} the demo's whole analysis without causal {whole:.1f} s (concepts "
                    f"{t['concepts'][k]:.1f}, faithfulness {t['faithfulness'][k]:.1f}, occlusion variant "
                    f"{t['occlusion'][k]:.1f}) | causal/rest {warm / whole:.2f} warm, {cold / whole:.2f} "
                    f"cold, share of the analysis {warm / (warm + whole):.0%} warm"
                )


if __name__ == "__main__":
    main()
