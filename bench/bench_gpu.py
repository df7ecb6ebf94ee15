"""The GPU path end to end: training, Grad-CAM and segmentation rates, and the full analysis wall time.

    python bench/bench_gpu.py                      # on a GPU: 224 px, batch 256, bf16 training
    python bench/bench_gpu.py --device cpu         # the CPU defaults: 64 px, batch 16, fp32 (a dry run)

Prints, with the device name, in one run on one random-weight network:
- training images/s: the model-only step (random tensors already on the device: forward, backward, Adam)
  and a Lightning `fit` fed by the real data pipeline (synthetic cities -> view cache -> loader workers);
  target: pipeline >= 0.8x the model-only step;
- Grad-CAM images/s next to the forward pass (target >= 0.9x on a GPU, 0.85x on a CPU, docs/explainers.md);
- captum's pixel attributions next to the same forward pass: input x gradient, integrated gradients
  (16 steps) and SmoothGrad over input x gradient (8 noisy samples), target log P(class), as the pixel
  explainers run them; `python bench/bench_gradcam.py --device cuda` compares every CAM with pytorch-grad-cam;
- the object explainers' cost: occlusion and (opt-in) Shapley values, milliseconds and forward passes per
  image with 8 objects per image (at 64 px with --device cpu, 224 px on a GPU); Shapley values over
  coalitions the generator renders (opt-in, `shapley_rendered`) on one batch of real synthetic test images,
  with the renders first written to an empty counterfactual cache, then read from it;
- segmentation images/s: CSAIL ResNet50-dilated + PPM with random weights saved to a temporary folder
  (`--segmenter csail`, the paper's kind of model) or the stored label maps (`--segmenter ground_truth`);
- the wall time of the full after-fit analysis (Grad-CAM -> mask store, t-SNE and Figures 3, 4, 6; label
  maps, object ratios and Figure 5; the causal step: counterfactual scenes and deletion of every object, with
  its forward passes per second; residuals; faithfulness and the randomisation test) of the N test images.
Compare with the H100 anchors in docs/explainers.md (batch 256, 224 px).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from citylens.app.config import step_options
from citylens.core.layers import ARCHITECTURES, resolve_target_layer
from citylens.core.view import to_input
from citylens.data import SyntheticCityData
from citylens.explain import GradCAM, build_explainer
from citylens.models import CityClassifier, build_model
from citylens.pipeline import Variant
from citylens.pipeline.context import Context
from citylens.pipeline.masks import CachedScenes
from citylens.pipeline.steps import run_analysis
from citylens.segment import GroundTruthSegmenter, Segmenter
from citylens.segment.csail import CsailSegmenter, build_csail

CITIES = {
    "tokyo": {"planted": {"signboard": 0.9, "fence": 0.9}},
    "pittsburgh": {"planted": {"skyscraper": 0.9, "earth": 0.9}},
}
# Defaults per device type (a GPU run as in docs/explainers.md; a small CPU dry run); 20% of images tested.
DEFAULTS = {
    "cuda": {"size": 224, "batch": 256, "images_per_city": 4000, "seg_scale": 480, "steps": 20, "workers": 8},
    "cpu": {"size": 64, "batch": 16, "images_per_city": 150, "seg_scale": 64, "steps": 8, "workers": 0},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_rate(fn: Callable[[], object], n: int, device: torch.device, warmup: int, repeats: int) -> float:
    """Images/s of the fastest of `repeats` calls of fn (n images each) after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return n / best


def memory_format(args: argparse.Namespace) -> torch.memory_format:
    return torch.channels_last if args.channels_last else torch.contiguous_format


def mean_rate(fn: Callable[[], object], n: int, device: torch.device, warmup: int, calls: int) -> float:
    """Images/s over `calls` consecutive calls of fn (n images each) after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return n * calls / (time.perf_counter() - start)


def autocast(device: torch.device, bf16: bool) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def model_step_rate(args: argparse.Namespace, device: torch.device) -> float:
    """Forward + backward + Adam on random tensors already on the device (the ceiling for training)."""
    torch.manual_seed(0)
    network = build_model(args.arch, 2, args.size)
    network.to(device, memory_format=memory_format(args)).train()
    optimizer = torch.optim.Adam(network.parameters(), 1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(
        memory_format=memory_format(args)
    )
    y = torch.randint(0, 2, (args.batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, args.bf16):
            loss = torch.nn.functional.cross_entropy(network(x), y)
        loss.backward()
        optimizer.step()

    # Timed like the pipeline below: the mean over `steps` consecutive steps after `warmup`.
    return mean_rate(step, args.batch, device, args.warmup, args.steps)


class ThroughputTimer(pl.Callback):
    """Images/s of the training batches after the first `warmup` (validation excluded)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.end, self.images, self.seen = 0.0, 0, 0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if self.seen == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.seen += 1
        if self.start is not None:
            synchronize(self.device)
            self.end, self.images = time.perf_counter(), self.images + len(batch[1])

    @property
    def rate(self) -> float:
        return self.images / (self.end - self.start) if self.start is not None and self.images else 0.0


def pipeline_rate(
    args: argparse.Namespace, datamodule: SyntheticCityData, root: Path, device: torch.device
) -> tuple[float, CityClassifier]:
    """Images/s of Lightning `fit` on the real loaders, and the trained module (for the analysis)."""
    pl.seed_everything(0, workers=True)
    module = CityClassifier(
        args.arch, datamodule.num_classes, args.size, lr=1e-4, channels_last=args.channels_last
    )
    timer = ThroughputTimer(args.warmup, device)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if args.bf16 else "32-true",
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.rate, module.to(device).eval()


def random_network(
    args: argparse.Namespace, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """A random-weight network in eval mode, its Grad-CAM layer and a batch of random images on the device."""
    torch.manual_seed(0)
    network = build_model(args.arch, 2, args.size)
    layer = resolve_target_layer(network, "last_block")[0]
    network.to(device, memory_format=memory_format(args)).eval()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    return network, layer, images.contiguous(memory_format=memory_format(args))


def gradcam_rates(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """Images/s of the forward pass and of batched Grad-CAM (fp32, as the analysis runs)."""
    network, layer, images = random_network(args, device)
    cam = GradCAM(network, layer)

    def forward() -> object:
        with torch.no_grad():
            return network(images)

    rates = [
        best_rate(fn, args.batch, device, args.warmup, args.repeats) for fn in (forward, lambda: cam(images))
    ]
    return rates[0], rates[1]


def captum_rates(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Images/s of the forward pass and of captum's pixel attributions of log P(class) on one batch."""
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel

    network, _, images = random_network(args, device)
    target = torch.zeros(args.batch, dtype=torch.long, device=device)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(network(x), dim=1)

    def forward() -> object:
        with torch.no_grad():
            return network(images)

    ixg, ig = InputXGradient(log_prob), IntegratedGradients(log_prob)
    smooth = NoiseTunnel(ixg)
    fns: dict[str, Callable[[], object]] = {
        "forward": forward,
        "input x gradient": lambda: ixg.attribute(images, target=target),
        "integrated gradients (16 steps)": lambda: ig.attribute(
            images, target=target, n_steps=16, internal_batch_size=args.batch
        ),
        "SmoothGrad x IxG (8 samples)": lambda: smooth.attribute(
            images, nt_type="smoothgrad", nt_samples=8, nt_samples_batch_size=1, stdevs=0.15, target=target
        ),
    }
    return {name: best_rate(fn, args.batch, device, 1, args.repeats) for name, fn in fns.items()}


def object_explainer_costs(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[float, float]]:
    """Per object explainer (occlusion; Shapley values, opt-in, 16 sampled orders): seconds and network
    forward passes per image, on label maps of 8 vertical stripes (8 objects in every image)."""
    network, _, images = random_network(args, device)
    stripes = torch.arange(args.size, device=device) * 8 // args.size
    labels = stripes.expand(args.batch, args.size, args.size).contiguous()
    targets = torch.zeros(args.batch, dtype=torch.long, device=device)
    seen = [0]
    hook = network.register_forward_hook(
        lambda module, inputs, output: seen.__setitem__(0, seen[0] + len(output))
    )
    costs = {}
    for name in ("occlusion", "shapley"):
        explainer = build_explainer(name, network, "input", internal_batch_size=args.batch)
        seen[0] = 0
        call = functools.partial(explainer.low_res, images, targets, labels=labels)
        rate = best_rate(call, args.batch, device, 0, 1)
        costs[name] = (1 / rate, seen[0] / args.batch)
    hook.remove()
    return costs


def rendered_shapley_cost(
    args: argparse.Namespace, datamodule: SyntheticCityData, root: Path, device: torch.device
) -> list[tuple[str, float, float, float]]:
    """Shapley values over rendered coalitions (explainer shapley_rendered, defaults: exact up to 8 objects)
    on one test batch: (pass, seconds per image, network forward passes per image, objects per image) with
    an empty render cache (renders included), then with the renders cached."""
    network, _, _ = random_network(args, device)
    test = datamodule.split_view("test")
    _, views, records = next(test.batches(args.batch))
    labels = torch.from_numpy(np.stack([GroundTruthSegmenter(args.size).load(r) for r in records]))
    inputs, targets = to_input(views.to(device)), torch.zeros(len(records), dtype=torch.long, device=device)
    explainer = build_explainer("shapley_rendered", network, "input", internal_batch_size=args.batch)
    seen = [0]
    hook = network.register_forward_hook(
        lambda module, inputs, output: seen.__setitem__(0, seen[0] + len(output))
    )
    costs = []
    for name in ("renders + forwards", "cached renders"):
        scenes = CachedScenes(test, records, root / "rendered_shapley")
        seen[0] = 0
        synchronize(device)
        start = time.perf_counter()
        explainer.low_res(inputs, targets, labels=labels.to(device), scenes=scenes)
        synchronize(device)
        n_objects = sum(len(o) for o in scenes.objects()) / len(records)
        costs.append((name, (time.perf_counter() - start) / len(records), seen[0] / len(records), n_objects))
    hook.remove()
    return costs


def make_segmenter(args: argparse.Namespace, device: torch.device, folder: Path) -> Segmenter:
    """CSAIL with random weights saved as its checkpoint files, or the stored label maps."""
    if args.segmenter == "ground_truth":
        return GroundTruthSegmenter(args.size)
    torch.manual_seed(0)
    encoder, decoder = build_csail("resnet50dilated+ppm_deepsup")
    torch.save(encoder.state_dict(), folder / "encoder_epoch_0.pth")
    torch.save(decoder.state_dict(), folder / "decoder_epoch_0.pth")
    return CsailSegmenter(
        folder / "encoder_epoch_0.pth",
        folder / "decoder_epoch_0.pth",
        size=args.size,
        device=device,
        batch_size=args.seg_batch,
        scales=[args.seg_scale],
        bf16=device.type == "cuda",
    )


def segmentation_rate(
    args: argparse.Namespace, segmenter: Segmenter, datamodule: SyntheticCityData, device: torch.device
) -> float:
    """Images/s of the segmenter on one batch of test views (uint8 on the host, as the analysis feeds it)."""
    _, views, records = next(datamodule.split_view("test").batches(args.seg_batch * 2))
    return best_rate(lambda: segmenter(views, records), len(records), device, 1, args.repeats)


def analysis_seconds(
    args: argparse.Namespace,
    module: CityClassifier,
    datamodule: SyntheticCityData,
    segmenter: Segmenter,
    root: Path,
    device: torch.device,
) -> dict[str, float]:
    """Wall time of each after-fit analysis step on the test split (label maps not cached yet)."""
    run_dir = root / "run"
    run_dir.mkdir(exist_ok=True)
    test = datamodule.split_view("test")

    def context(seg: Segmenter) -> Context:
        network = module.network.eval()
        return Context(network, args.arch, test, run_dir, Variant(), seg, root / "labels", 0)

    steps = {
        "explain": (step_options("explain", batch_size=args.batch), segmenter),
        "objects": (step_options("objects", batch_size=args.seg_batch * 4), segmenter),
        "causal": (
            step_options("causal", batch_size=args.batch, workers=args.workers),
            GroundTruthSegmenter(args.size),
        ),
        "residuals": (step_options("residuals"), segmenter),
        "faithfulness": (step_options("faithfulness"), segmenter),
    }
    seconds = {}
    for name, (step, seg) in steps.items():
        synchronize(device)
        start = time.perf_counter()
        run_analysis(context(seg), [step])
        synchronize(device)
        seconds[name] = time.perf_counter() - start
    return seconds


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="resnet18")
    parser.add_argument("--size", type=int, help="input side in pixels (cuda 224, cpu 64)")
    parser.add_argument("--batch", type=int, help="batch size (cuda 256, cpu 16)")
    parser.add_argument(
        "--images-per-city", type=int, help="synthetic images per city (cuda 4000, cpu 150); 20%% are tested"
    )
    parser.add_argument("--workers", type=int, help="loader worker processes (cuda 8, cpu 0)")
    parser.add_argument(
        "--steps", type=int, help="timed training steps through the pipeline (cuda 20, cpu 8)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--segmenter", choices=["csail", "ground_truth"], default="csail")
    parser.add_argument("--seg-scale", type=int, help="CSAIL input side (cuda 480, cpu 64)")
    parser.add_argument("--seg-batch", type=int, default=16)
    parser.add_argument("--fp32", action="store_true", help="train in fp32 on a GPU too (default bf16-mixed)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs (model option)")
    parser.add_argument("--cache-dir", help="where the synthetic data is generated (default: a temp dir)")
    args = parser.parse_args()
    args.device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    args.device = "cpu" if args.device == "auto" else args.device
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.bf16 = args.device == "cuda" and not args.fp32
    return args


def data(args: argparse.Namespace, cache_dir: Path) -> SyntheticCityData:
    """The synthetic cities at the benchmark's size, generated and cached (in --workers processes)."""
    datamodule = SyntheticCityData(
        CITIES,
        images_per_city=args.images_per_city,
        image_size=args.size,
        input_size=args.size,
        batch_size=args.batch,
        num_workers=args.workers,
        cache_dir=str(cache_dir),
    )
    datamodule.setup("fit")
    return datamodule


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    print(f"device: {device_name(device)}")
    precision = ("bf16-mixed" if args.bf16 else "fp32") + (", channels-last" if args.channels_last else "")
    segmenter = args.segmenter + (f" at {args.seg_scale} px" if args.segmenter == "csail" else "")
    print(
        f"{args.arch}, {args.size}x{args.size}, batch {args.batch}, training {precision}, "
        f"{args.workers} loader workers, segmenter {segmenter}"
    )
    with tempfile.TemporaryDirectory(prefix="citylens-bench-") as tmp:
        root = Path(tmp)
        cache_dir = Path(args.cache_dir) if args.cache_dir else root / "cache"
        start = time.perf_counter()
        datamodule = data(args, cache_dir)
        print(f"data ready in {time.perf_counter() - start:.1f} s ({2 * args.images_per_city} images)")
        model_rate = model_step_rate(args, device)
        fit_rate, module = pipeline_rate(args, datamodule, root, device)
        print(
            f"training   images/s: model-only step {model_rate:9.1f}   Lightning fit on the data pipeline "
            f"{fit_rate:9.1f}   ratio {fit_rate / model_rate:.2f}x (target >= 0.8x)"
        )
        forward, cam = gradcam_rates(args, device)
        target = 0.9 if device.type == "cuda" else 0.85
        print(
            f"Grad-CAM   images/s: forward {forward:9.1f}   Grad-CAM {cam:9.1f}   ratio {cam / forward:.2f}x "
            f"(target >= {target}x)"
        )
        rates = captum_rates(args, device)
        for name, rate in rates.items():
            if name != "forward":
                print(f"captum     images/s: {name:32s} {rate:9.1f}   {rate / rates['forward']:.3f}x forward")
        for name, (seconds, forwards) in object_explainer_costs(args, device).items():
            print(
                f"objects    {name:10s} {seconds * 1000:9.1f} ms/image   {forwards:6.0f} forward passes/image"
            )
        for name, seconds, forwards, objects in rendered_shapley_cost(args, datamodule, root, device):
            print(
                f"objects    shapley_rendered ({name}, {objects:.1f} objects/image) {seconds * 1000:9.1f} "
                f"ms/image   {forwards:6.0f} forward passes/image"
            )
        segmenter = make_segmenter(args, device, root)
        print(f"segmenter  images/s: {segmentation_rate(args, segmenter, datamodule, device):9.1f}")
        n_test = len(datamodule.splits["test"])
        seconds = analysis_seconds(args, module, datamodule, segmenter, root, device)
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        print(f"analysis of {n_test} test images: {sum(seconds.values()):.1f} s wall ({parts})")
        causal = pd.read_csv(root / "run" / "causal.csv")
        views = 2 * int(causal.loc[causal["method"] == "counterfactual", "n_images"].sum())
        rest = sum(seconds.values()) - seconds["causal"]
        print(
            f"causal     {views} views (counterfactual + deletion) in {seconds['causal']:.1f} s: "
            f"{views / seconds['causal']:.1f} views/s, {seconds['causal'] / rest:.2f}x the rest"
        )


if __name__ == "__main__":
    main()
