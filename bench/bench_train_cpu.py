"""CPU training speed of each setting against fp32, per architecture and image size, in one interleaved run.

    python bench/bench_train_cpu.py [--archs vgg11 resnet18 simple simpler] [--sizes 64 224]
                                    [--settings fp32 bf16 cl ...] [--steps 2] [--rounds 6] [--quick]
    python bench/bench_train_cpu.py --accuracy [--epochs 3] [--seeds 0 1]

Speed: train images/s of the demo's step (batch 16, fused Adam, the data module's train loader: view cache ->
flip -> normalise) on synthetic cities, for each setting:
- fp32: the current default (32-true, contiguous memory format, loader in the training process);
- bf16: bfloat16 autocast around forward and loss, as Lightning's `precision=bf16-mixed` does on a CPU;
- cl: channels-last weights and inputs (`model.channels_last=true`);
- bf16+cl: both;
- workers1 / workers2: `data.num_workers` loader processes (a loader per round, its start-up not timed);
- threads1: `torch.set_num_threads(1)` (one intra-op thread instead of one per core).
Settings take turns within each (arch, size): every round runs a few steps of each, so a load change from
other jobs on a shared machine hits all settings alike; the ratio to fp32 is taken within a round, and the
table gives its median, quartiles and range over the rounds (the noise).

Accuracy (`--accuracy`): test accuracy of a short run per (arch, setting, seed) on the demo's data (700 images
per city at 64 px, the demo's per-architecture learning rate), so a setting that costs accuracy beyond the
spread between seeds is not made a default. Each run evaluates under its own setting.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from citylens.data import SyntheticCityData
from citylens.data.synthetic import DEFAULT_CITIES
from citylens.models import CityClassifier

DEMO_LR = {"vgg11": 1e-4, "resnet18": 3e-4, "simple": 3e-4, "simpler": 3e-4}


@dataclass(frozen=True)
class Setting:
    """One training configuration: autocast dtype, memory format, loader processes, intra-op threads."""

    bf16: bool = False
    channels_last: bool = False
    workers: int = 0
    threads: int | None = None


SETTINGS = {
    "fp32": Setting(),
    "bf16": Setting(bf16=True),
    "cl": Setting(channels_last=True),
    "bf16+cl": Setting(bf16=True, channels_last=True),
    "workers1": Setting(workers=1),
    "workers2": Setting(workers=2),
    "threads1": Setting(threads=1),
}


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def data(size: int, images_per_city: int, cache: Path, workers: int = 0, seed: int = 0) -> SyntheticCityData:
    """The demo's synthetic cities at `size` px, batch 16, with `workers` loader processes."""
    cities = {city: {"planted": planted} for city, planted in DEFAULT_CITIES.items()}
    datamodule = SyntheticCityData(
        cities,
        images_per_city=images_per_city,
        image_size=size,
        input_size=size,
        batch_size=16,
        num_workers=workers,
        cache_dir=str(cache),
        split_seed=seed,
    )
    datamodule.setup()
    return datamodule


def classifier(arch: str, size: int, setting: Setting, num_classes: int = 2) -> CityClassifier:
    """The demo's module for `arch`, in the setting's memory format, and its fused Adam."""
    return CityClassifier(arch, num_classes, size, lr=DEMO_LR[arch], channels_last=setting.channels_last)


def train_step(
    module: CityClassifier,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    bf16: bool,
) -> None:
    """One step as Lightning runs it: forward and loss under autocast (bf16-mixed), backward, Adam."""
    x, y = batch
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        loss = module.loss(module(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class Cell:
    """One (arch, size): a contiguous and a channels-last module with their optimizers, trained by turns."""

    def __init__(self, arch: str, datamodule: SyntheticCityData, settings: list[str]) -> None:
        self.datamodule = datamodule
        self.trained: dict[bool, tuple[CityClassifier, torch.optim.Optimizer]] = {}
        for channels_last in sorted({SETTINGS[name].channels_last for name in settings}):
            torch.manual_seed(0)
            setting = Setting(channels_last=channels_last)
            module = classifier(arch, datamodule.input_size, setting, datamodule.num_classes).train()
            self.trained[channels_last] = module, module.configure_optimizers()["optimizer"]
        datamodule.num_workers = 0
        self.batches = cycle(datamodule)  # the in-process loader, shared by the settings without workers

    def rate(self, setting: Setting, steps: int) -> float:
        """Train images/s of `steps` steps under `setting`; a setting with loader workers starts its own
        loader and takes one untimed step first (worker start-up is not a step's cost)."""
        module, optimizer = self.trained[setting.channels_last]
        batches = self.batches
        with threads(setting.threads):
            if setting.workers:
                self.datamodule.num_workers = setting.workers
                batches = cycle(self.datamodule)
                train_step(module, optimizer, next(batches), setting.bf16)
            start, images = time.perf_counter(), 0
            for _ in range(steps):
                batch = next(batches)
                train_step(module, optimizer, batch, setting.bf16)
                images += len(batch[1])
            elapsed = time.perf_counter() - start
        if setting.workers:
            batches.close()  # ends the loader's worker processes
        return images / elapsed


def cycle(datamodule: SyntheticCityData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Train batches without end, one loader (and its worker processes) for all epochs."""
    loader = datamodule.train_dataloader()
    while True:
        yield from loader


def speed(args: argparse.Namespace, cache: Path) -> None:
    """Print images/s per (arch, size, setting) and each setting's ratio to fp32.

    Settings take turns step by step: each round runs `steps` steps of every setting (in alternating order),
    so a load change from other jobs on a shared machine falls on all settings alike; the ratio to fp32 is
    taken within a round, and its median and quartiles over the rounds are printed (the spread is the noise).
    """
    data_of = {size: data(size, args.images_per_city, cache) for size in args.sizes}
    cells = [(arch, size) for size in args.sizes for arch in args.archs if (arch, size) not in args.skip]
    print(
        f"train images/s, batch 16, {torch.get_num_threads()} threads, {args.rounds} rounds of "
        f"{args.steps} steps per setting"
    )
    header = f"{'arch':9s} {'px':>4s} {'setting':9s} {'img/s':>7s} {'x fp32':>7s}"
    print(f"{header} {'quartiles':>11s} {'range':>11s}")
    for arch, size in cells:
        cell = Cell(arch, data_of[size], args.settings)
        for name in args.settings:  # untimed: oneDNN builds its kernels for each setting's first steps
            cell.rate(SETTINGS[name], args.warmup)
        rates: dict[str, list[float]] = {name: [] for name in args.settings}
        for round_ in range(args.rounds):
            for name in args.settings if round_ % 2 == 0 else args.settings[::-1]:
                rates[name].append(cell.rate(SETTINGS[name], args.steps))
        for name in args.settings:
            ratio = sorted(r / b for r, b in zip(rates[name], rates["fp32"]))
            q1, median, q3 = (
                statistics.quantiles(ratio, n=4, method="inclusive") if len(ratio) > 1 else ratio * 3
            )
            print(
                f"{arch:9s} {size:4d} {name:9s} {statistics.median(rates[name]):7.1f} {median:6.2f}x "
                f"{q1:5.2f}-{q3:.2f}x {ratio[0]:5.2f}-{ratio[-1]:.2f}x",
                flush=True,
            )
        del cell


def accuracy_run(arch: str, datamodule: SyntheticCityData, setting: Setting, epochs: int, seed: int) -> float:
    """Test accuracy after `epochs` epochs of the demo's recipe under `setting`."""
    torch.manual_seed(seed)
    module = classifier(arch, datamodule.input_size, setting, datamodule.num_classes).train()
    optimizer = module.configure_optimizers()["optimizer"]
    datamodule.num_workers = setting.workers
    with threads(setting.threads):
        for _ in range(epochs):
            for batch in datamodule.train_dataloader():
                train_step(module, optimizer, batch, setting.bf16)
        module.eval()
        correct = total = 0
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=setting.bf16):
            for x, y in datamodule.test_dataloader():
                correct += int((module(x).argmax(1) == y).sum())
                total += len(y)
    return correct / total


def accuracy(args: argparse.Namespace, cache: Path) -> None:
    """Print test accuracy per (arch, setting) over the seeds, interleaved by seed."""
    datamodule = data(64, args.accuracy_images_per_city, cache)
    acc: dict[tuple[str, str], list[float]] = {}
    n = len(datamodule.splits["test"])
    print(f"test accuracy, {args.epochs} epochs at 64 px, {n} test images, seeds {args.seeds}")
    for seed in args.seeds:
        for arch in args.archs:
            for name in args.settings:
                acc.setdefault((arch, name), []).append(
                    accuracy_run(arch, datamodule, SETTINGS[name], args.epochs, seed)
                )
                print(f"{arch:9s} {name:9s} seed {seed}: {acc[(arch, name)][-1]:.3f}", flush=True)
    print(f"\n{'arch':9s} {'setting':9s} {'mean acc':>8s}  per seed")
    for arch in args.archs:
        for name in args.settings:
            runs = acc[(arch, name)]
            print(f"{arch:9s} {name:9s} {statistics.mean(runs):8.3f}  {' '.join(f'{a:.3f}' for a in runs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["vgg11", "resnet18", "simple", "simpler"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--skip", nargs="*", default=["vgg11:224"], help="arch:px cells left out")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per setting and round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of every setting per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per setting and cell")
    parser.add_argument("--images-per-city", type=int, default=100, help="speed: images generated per city")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 32 px, 2 steps, 1 repeat")
    parser.add_argument("--accuracy", action="store_true", help="test accuracy per setting instead of speed")
    parser.add_argument("--epochs", type=int, default=3, help="accuracy: epochs per run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="accuracy: seeds per setting")
    parser.add_argument("--accuracy-images-per-city", type=int, default=700, help="accuracy: the demo's 700")
    args = parser.parse_args()
    if "fp32" not in args.settings:
        args.settings.insert(0, "fp32")
    args.skip = {(cell.split(":")[0], int(cell.split(":")[1])) for cell in args.skip}
    if args.quick:
        args.sizes, args.steps, args.warmup, args.rounds, args.images_per_city = [32], 1, 1, 2, 20
        args.epochs, args.seeds, args.accuracy_images_per_city = 1, [0], 20
    with tempfile.TemporaryDirectory() as tmp:
        (accuracy if args.accuracy else speed)(args, Path(tmp))


if __name__ == "__main__":
    main()
