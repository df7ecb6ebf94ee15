"""Shared fixtures: the helpers and hand-made values of more than one test file (no test imports another).

Each test file is named after the module it tests (tests/test_<dotted path below citylens, dots as
underscores>.py; tests/README.md has the table). Suite-wide tests, which run the whole program rather than
one module, keep a descriptive name:

- test_faults.py: killed and failing `citylens-train` processes resume to the same run (docs/faults.md);
- test_scale.py: DDP, SLURM and parallel-launcher runs against one process;
- test_packaging.py: the wheel installs and runs the three CLIs from another directory;
- test_layers.py: the package's imports run down the layers; no test file imports another;
- test_imports.py: the library layers load neither Lightning nor Hydra;
- test_bench.py: every benchmark still runs, at a tiny size;
- test_same_outputs.py: tools/same_outputs.py's comparison of two output trees.

Fixtures that return a helper are session-scoped, so module-scoped fixtures can use them too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image
from torch import nn

from citylens.core.ade20k import class_index
from citylens.core.layers import LAYER_PRESETS
from citylens.core.records import ImageRecord
from citylens.core.run_folder import write_complete
from citylens.core.view import to_input
from citylens.data.datamodule import SplitView, SyntheticCityData
from citylens.data.synthetic import SyntheticCities, renderable_classes
from citylens.explain.store import write_store
from citylens.models import build_model
from citylens.pipeline import Variant
from citylens.pipeline.context import Context
from citylens.report import browser

CONF = Path(__file__).resolve().parents[1] / "conf"
# Real street photos with their sources and licences (tests/data/real/README.md, SOURCES.tsv).
REAL = Path(__file__).resolve().parent / "data" / "real"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The image ids SyntheticCities.render_variants is called for in this process during a test, in order."""
    calls: list[str] = []
    original = SyntheticCities.render_variants

    def counted(self: SyntheticCities, image_id: str, removes: list) -> tuple[np.ndarray, np.ndarray]:
        calls.append(image_id)
        return original(self, image_id, removes)

    monkeypatch.setattr(SyntheticCities, "render_variants", counted)
    return calls


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    """citylens' Hydra config folder (conf/)."""
    return CONF


@pytest.fixture(scope="session")
def real_photos() -> Path:
    """Real street photos with their sources and licences (tests/data/real/README.md, SOURCES.tsv)."""
    return REAL


# ---------------------------------------------------------------- configs, CLI runs, W&B run files


def _compose_cfg(overrides: list[str], run_dir: Path, cache_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as citylens-train would, with the run dir and cache in temp folders."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(
            "train", overrides=[f"paths.run_dir={run_dir}", f"paths.cache_dir={cache_dir}", *overrides]
        )


@pytest.fixture(scope="session")
def compose_cfg() -> Callable[[list[str], Path, Path], DictConfig]:
    """`compose_cfg(overrides, run_dir, cache_dir)`: conf/train.yaml composed as citylens-train would."""
    return _compose_cfg


def _run_cli(
    args: list[str], root: Path, timeout: int = 900, code: int = 0, script: bool = False, **env_vars: str
) -> subprocess.CompletedProcess:
    """`python -m citylens.app.train ARGS` (with `script`, the installed `citylens-train` console script) with
    outputs and caches under `root`; fails the test unless it exits with status `code`."""
    env = {
        **os.environ,
        **env_vars,
        "CITYLENS_OUTPUTS": str(root / "out"),
        "CITYLENS_CACHE": str(root / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    entry = [str(Path(sys.executable).with_name("citylens-train"))]
    cmd = entry if script else [sys.executable, "-m", "citylens.app.train"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == code, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """`run_cli(args, root, timeout=900, code=0, script=False, **env)`: `python -m citylens.app.train ARGS`
    (or the `citylens-train` console script) in `root`, must exit with status `code`."""
    return _run_cli


def _chromium_driver(profile: Path) -> Any:
    """A headless Chromium (citylens.report.browser); skipped off CI when it is missing, failed in CI."""
    if browser.find_chromium() is None:
        message = "headless Chromium needs chromium, chromium-driver (apt) and selenium (pip, dev extra)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run installs them")
        pytest.skip(message)
    return browser.headless_chromium(profile)


@pytest.fixture(scope="session")
def chromium_driver() -> Callable[[Path], Any]:
    """`chromium_driver(profile)`: a headless Chromium WebDriver with its user data in `profile`; the test
    is skipped off CI when Chromium, its driver or selenium is missing and fails in CI (.ci/run installs
    them)."""
    return _chromium_driver


def _wandb_record(run_file: Path) -> dict:
    """What an offline W&B run file holds (state, name, config, summary), read with `wandb leet inspect`."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.fixture(scope="session")
def wandb_record() -> Callable[[Path], dict]:
    """`wandb_record(run_file)`: an offline W&B run file's state, name, config and summary."""
    return _wandb_record


def _wandb_records(run_file: Path) -> list[dict]:
    """Every record of an offline W&B run file (run, metric, summary, artifact...): `wandb leet inspect`."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(run_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def wandb_records() -> Callable[[Path], list[dict]]:
    """`wandb_records(run_file)`: every record of an offline W&B run file (run, metric, artifact...)."""
    return _wandb_records


# ---------------------------------------------------------------- data


def _write_folder_dataset(root: Path, cities: dict[str, int], size: tuple[int, int] = (80, 60)) -> None:
    """Write a tiny folder dataset of random JPEGs/PNGs: root/<city>/<sub>/<i>.jpg, colour-coded by city."""
    rng = np.random.default_rng(0)
    for c, (city, count) in enumerate(cities.items()):
        for i in range(count):
            path = root / city / f"part{i % 2}" / f"{city}_{i:03d}.{'png' if i % 3 == 0 else 'jpg'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., c % 3] = 255
            Image.fromarray(pixels).save(path)


@pytest.fixture(scope="session")
def write_folder_dataset() -> Callable[..., None]:
    """`write_folder_dataset(root, {city: count}, size=(80, 60))`: a tiny folder dataset of random images."""
    return _write_folder_dataset


def _label_classes(label: np.ndarray) -> set[str]:
    return {name for name in renderable_classes() if (label == class_index(name)).any()}


@pytest.fixture(scope="session")
def label_classes() -> Callable[[np.ndarray], set[str]]:
    """`label_classes(label_map)`: the names of the renderable classes a label map holds."""
    return _label_classes


# ---------------------------------------------------------------- hand-made runs and sweeps (mask stores)

DEFAULT = Variant()

IDS = ["pittsburgh/p0", "tokyo/t0"]
CHECKER = (np.indices((4, 4)).sum(axis=0) % 2).astype(np.float32)
TOP = np.zeros((4, 4), np.float32)
TOP[:2] = 1
ALL_BUT_CORNER = np.ones((4, 4), np.float32)
ALL_BUT_CORNER[0, 0] = 0


@pytest.fixture(scope="session")
def default_variant() -> Variant:
    """The default analysis variant (Grad-CAM, last block, true city, all images, t = 0.5)."""
    return DEFAULT


@pytest.fixture(scope="session")
def hand_masks() -> dict[str, np.ndarray]:
    """Three runs' 4x4 masks of two images (IDS), keyed "A", "B", "C"."""
    # Every mask holds 0 and 1, so the store's min-max normalisation keeps it (up to a factor 1/(1+1e-7)).
    return {
        "A": np.stack([CHECKER, TOP]),
        "B": np.stack([ALL_BUT_CORNER, 1 - TOP]),
        "C": np.stack([1 - CHECKER, TOP]),
    }


@pytest.fixture(scope="session")
def hand_ar() -> dict[tuple[str, str], float]:
    """The average residual of each pair of `hand_masks`, computed by hand."""
    # By hand: A vs B, image 0 differs where the checker is 0 except the corner (7 of 16 px),
    # image 1 everywhere.
    return {("B", "A"): (7 / 16 + 1) / 2, ("B", "C"): (9 / 16 + 1) / 2, ("A", "C"): (1 + 0) / 2}


def _make_run(
    run_dir: Path,
    arch: str,
    seed: int,
    low_res: np.ndarray,
    ids: list[str] = IDS,
    finished: bool = True,
    size: int | None = None,
    variant: Variant = DEFAULT,
    fingerprint: str = "hand",
    places: list[str] | None = None,
    dataset: dict | None = None,
) -> Path:
    """A fake run dir: a mask store (full-size maps when `size` is None) and, if finished, metrics.json and
    the completion record. `dataset` is the store's dataset description (e.g. with the planted objects)."""
    n = len(low_res)
    cities = [i.split("/")[0] for i in ids]
    targets = np.array([0 if c == "pittsburgh" else 1 for c in cities])
    probs = np.eye(2, dtype=np.float32)[targets] * 0.8 + 0.1
    provenance = {
        "arch": arch,
        "seed": seed,
        "input_size": size or low_res.shape[-1],
        "dataset_fingerprint": fingerprint,
        "split_seed": 0,
        "split_settings": {"fractions": [0.6, 0.2, 0.2], "by": "place", "balance": False, "balance_seed": 0},
        "city_names": ["pittsburgh", "tokyo"],
        "dataset": dataset or {"kind": "hand-made"},
    }
    provenance.update(variant.to_dict())
    write_store(
        variant.dir(run_dir) / "masks", low_res, probs[:n], targets[:n], ids, cities, provenance, places
    )
    if finished:
        metrics = {"arch": arch, "seed": seed, "test/acc": 1.0, "cities": ["pittsburgh", "tokyo"]}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        write_complete(run_dir, {"written_by": "tests"})
    return run_dir


@pytest.fixture(scope="session")
def make_run() -> Callable[..., Path]:
    """`make_run(run_dir, arch, seed, low_res, ids=..., finished=True, size=None, variant=..., ...)`: a fake
    run dir with a mask store and, if finished, metrics.json and the completion record."""
    return _make_run


def _make_sweep(root: Path) -> Path:
    sweep = root / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


@pytest.fixture(scope="session")
def make_sweep() -> Callable[[Path], Path]:
    """`make_sweep(root)`: an empty Hydra multirun folder root/sweep."""
    return _make_sweep


# ---------------------------------------------------------------- hand-made ratio and causal tables


def _ratio_rows(city: str, ratios: dict[str, float], threshold: float = 0.5, kept: bool = True) -> list[dict]:
    return [
        {"threshold": threshold, "city": city, "object": o, "ratio": r, "kept": kept}
        for o, r in ratios.items()
    ]


def _causal_rows(city: str, effects: dict[str, float], method: str = "counterfactual") -> list[dict]:
    return [{"city": city, "object": o, "effect": e, "method": method} for o, e in effects.items()]


@pytest.fixture(scope="session")
def ratio_rows() -> Callable[..., list[dict]]:
    """`ratio_rows(city, {object: ratio}, threshold=0.5, kept=True)`: rows of an object_ratios.csv."""
    return _ratio_rows


@pytest.fixture(scope="session")
def causal_rows() -> Callable[..., list[dict]]:
    """`causal_rows(city, {object: effect}, method="counterfactual")`: rows of a causal.csv."""
    return _causal_rows


@pytest.fixture(scope="session")
def hand_ratios() -> pd.DataFrame:
    """An object-ratio table. Tokyo: R and effect (`hand_causal`) in the same order; Pittsburgh: opposite."""
    return pd.DataFrame(
        _ratio_rows("tokyo", {"signboard": 0.9, "fence": 0.7, "car": 0.5, "road": 0.3, "building": 0.1})
        + _ratio_rows("tokyo", {"sky": 0.99}, kept=False)
        + _ratio_rows("tokyo", {"signboard": 0.1, "fence": 0.2, "car": 0.3, "road": 0.4}, threshold=0.3)
        + _ratio_rows("pittsburgh", {"skyscraper": 0.1, "earth": 0.2, "car": 0.3, "road": 0.4})
    )


@pytest.fixture(scope="session")
def hand_causal() -> pd.DataFrame:
    """A causal table (counterfactual effects) to rank `hand_ratios` against."""
    return pd.DataFrame(
        _causal_rows("tokyo", {"signboard": 0.3, "fence": 0.2, "car": 0.1, "road": 0.0, "building": -0.1})
        + _causal_rows("tokyo", {"tree": 0.5, "sky": 0.9})
        + _causal_rows("pittsburgh", {"skyscraper": 0.4, "earth": 0.3, "car": 0.2, "road": 0.1})
    )


PLANTED = {"tokyo": ["signboard", "fence"], "pittsburgh": ["skyscraper", "earth"]}


@pytest.fixture(scope="session")
def planted() -> dict[str, list[str]]:
    """The planted objects of `hand_ratios` and `hand_causal`'s two cities."""
    return PLANTED


def _split_view(n: int = 12, size: int = 32) -> SplitView:
    """A test split of n random views alternating pittsburgh / tokyo, stored in reverse row order (so a
    wrong row lookup shows), with the hand-made planted objects."""
    cities = ["pittsburgh", "tokyo"]
    views = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    records = [
        ImageRecord(f"{cities[i % 2]}/{i}", Path(f"/nonexistent/{i}.jpg"), cities[i % 2], f"p{i}", None)
        for i in range(n)
    ]
    rows = np.arange(n - 1, -1, -1, dtype=np.int64)
    facts = {"kind": "synthetic", "planted": PLANTED}
    return SplitView("test", records, cities, size, "hand-made", 0, {}, facts, views[::-1].copy(), rows)


@pytest.fixture(scope="session")
def split_data() -> Callable[..., SplitView]:
    """`split_data(n=12, size=32)`: a test split as the analysis steps read it (citylens.data.SplitView)."""
    return _split_view


# ---------------------------------------------------------------- networks and segmenter inputs


@pytest.fixture(scope="module")
def networks() -> dict[str, nn.Module]:
    """One seeded random-weight network per architecture at 64 px (3 classes), built once per test module."""
    built = {}
    for arch in LAYER_PRESETS:
        torch.manual_seed(0)
        built[arch] = build_model(arch, 3, input_size=64)
    return built


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine, OpenMP spinning makes 2 threads ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image_records(n: int, label_paths: list[Path] | None = None) -> list[ImageRecord]:
    paths = label_paths or [None] * n
    return [
        ImageRecord(f"city/img{i}.jpg", Path(f"/nonexistent/img{i}.jpg"), "city", f"p{i}", paths[i])
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def image_records() -> Callable[..., list[ImageRecord]]:
    """`image_records(n, label_paths=None)`: n records of one city whose image files do not exist."""
    return _image_records


def _random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="session")
def random_images() -> Callable[..., torch.Tensor]:
    """`random_images(n, size, seed=0)`: a seeded uint8 batch (n, 3, size, size)."""
    return _random_images


# ---------------------------------------------------------------- a tiny network trained for seconds


def _train_tiny(datamodule: object, epochs: int = 20, seed: int = 0) -> nn.Module:
    """A small BN-CNN trained with Adam on the data module's train loader, in eval mode: it learns the
    one-cue synthetic cities at 32 px in seconds (Simple needs far longer)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 2),
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x, y in datamodule.train_dataloader():
            loss = nn.functional.cross_entropy(net(to_input(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@pytest.fixture(scope="session")
def train_tiny() -> Callable[..., nn.Module]:
    """`train_tiny(datamodule, epochs=20, seed=0)`: a small CNN trained on the data module for seconds."""
    return _train_tiny


# One cue: city a plants a signboard in every image, city b never; nothing else tells them apart.
ONE_CUE = {"a": {"planted": {"signboard": 1.0}}, "b": {"planted": {"signboard": 0.0}}}


def _one_cue_data(cache_dir: Path, n: int = 100, size: int = 32) -> SyntheticCityData:
    dm = SyntheticCityData(
        ONE_CUE, images_per_city=n, image_size=size, input_size=size, cache_dir=str(cache_dir), hflip=False
    )
    dm.setup()
    return dm


@pytest.fixture(scope="session")
def one_cue_data(cache_dir: Path) -> Callable[..., SyntheticCityData]:
    """`one_cue_data(n=100, size=32)`: the one-cue cities (set up), n images per city at `size` px."""
    return lambda n=100, size=32: _one_cue_data(cache_dir, n, size)


@pytest.fixture(scope="session")
def one_cue(cache_dir: Path) -> tuple[nn.Module, SyntheticCityData]:
    """The tiny network trained for seconds on the one-cue cities (100 images per city, 32 px), and them."""
    dm = _one_cue_data(cache_dir)
    return _train_tiny(dm), dm


def _simple_context(data: Any, run_dir: Path, variant: Variant | None = None, **kwargs: Any) -> Context:
    torch.manual_seed(0)
    network = build_model("simple", 2, input_size=data.input_size)
    return Context(network.eval(), "simple", data, run_dir, variant or Variant(), **kwargs)


@pytest.fixture(scope="session")
def simple_context() -> Callable[..., Context]:
    """`simple_context(data, run_dir, variant=None, **fields)`: a step's context with a seeded random Simple
    network for the split `data` (e.g. split_data())."""
    return _simple_context
