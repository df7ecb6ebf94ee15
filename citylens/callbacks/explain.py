"""After fit: Grad-CAM masks of every test image into the mask store, the t-SNE map, Figures 3, 4 and 6."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import citylens
from citylens.analysis.embedding import embed_masks
from citylens.callbacks.base import AnalysisCallback, best_checkpoint, log, log_artifacts, on_rank_zero
from citylens.data.datamodule import to_input
from citylens.explain import GradCAM, explain, validate_threshold
from citylens.explain.store import STORE_DIR, MaskStore, StoreError, open_store, write_store
from citylens.faults import kill_point
from citylens.io import atomic_path
from citylens.report import figures
from citylens.run_state import sha256


def sample_indices(targets: np.ndarray, per_city: int, seed: int = 0) -> np.ndarray:
    """Indices of `per_city` test images of each city, fixed by the split (same for every run of a sweep)."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:per_city] for c in np.unique(targets)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def shard_bounds(n: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous share [start, stop) of n test images, in whole batches.

    Shares start at multiples of `batch_size`, so every image is explained in the same batch as in a
    single process and the gathered maps are bit-identical to a single-process run.
    """
    n_batches = -(-n // batch_size)
    per_rank = -(-n_batches // world_size) * batch_size
    start = min(n, rank * per_rank)
    return start, min(n, start + per_rank)


def compute_maps(
    module: pl.LightningModule, datamodule: Any, batch_size: int, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution Grad-CAM maps (n, h, w) and class probabilities (n, C) of test images start:stop."""
    cam = GradCAM(module.network, module.target_layer)
    stop = len(datamodule.splits["test"]) if stop is None else stop
    maps_parts, prob_parts = [], []
    device = module.device
    for _, views, _ in tqdm(
        datamodule.analysis_batches("test", batch_size, start, stop),
        desc="Grad-CAM",
        total=-(-max(stop - start, 0) // batch_size),
        unit="batch",
    ):
        maps, logits = cam.low_res(to_input(views.to(device)))
        maps_parts.append(maps.cpu().numpy())
        prob_parts.append(logits.float().softmax(1).cpu().numpy())
    if not maps_parts:
        return np.zeros((0, 0, 0), np.float32), np.zeros((0, datamodule.num_classes), np.float32)
    return (
        np.concatenate(maps_parts).astype(np.float32, copy=False),
        np.concatenate(prob_parts).astype(np.float32, copy=False),
    )


def gather_maps(
    trainer: pl.Trainer, module: pl.LightningModule, batch_size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every rank explains its share of the test split; rank 0 gets all maps in split order, others None."""
    start, stop = shard_bounds(
        len(trainer.datamodule.splits["test"]), batch_size, trainer.global_rank, trainer.world_size
    )
    with torch.inference_mode(False):
        part = compute_maps(module, trainer.datamodule, batch_size, start, stop)
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, part)
    if not trainer.is_global_zero:
        return None
    parts = [p for p in parts if len(p[0])]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def compute_store(
    module: pl.LightningModule,
    datamodule: Any,
    run_dir: Path,
    batch_size: int,
    run_seed: int | None,
    checkpoint: str | None = None,
    maps: tuple[np.ndarray, np.ndarray] | None = None,
) -> MaskStore:
    """Grad-CAM every test image (best checkpoint weights in `module`) and write the run's mask store.

    `maps`: the (low-res maps, probabilities) of the whole test split when already computed (under DDP).
    A store already there with the same provenance (checkpoint contents, layer, view, dataset, images: a run
    killed later in its analysis) is kept instead of computed again.
    """
    provenance = {
        "arch": module.hparams.arch,
        "seed": run_seed,
        "checkpoint": checkpoint,
        "target_layer": module.target_layer_name,
        "input_size": datamodule.input_size,
        "dataset_fingerprint": datamodule.fingerprint,
        "split_seed": datamodule.split_seed,
        "citylens_version": citylens.__version__,
        "city_names": datamodule.cities,
        "dataset": datamodule.describe(),
        "checkpoint_sha256": sha256(Path(checkpoint)) if checkpoint and Path(checkpoint).is_file() else None,
    }
    records = datamodule.splits["test"]
    reused = reusable_store(run_dir, provenance, [r.image_id for r in records])
    if reused is not None:
        log.info("mask store of the same checkpoint already written, kept: %s", reused.path)
        return reused
    low_res, probs = maps if maps is not None else compute_maps(module, datamodule, batch_size)
    write_store(
        run_dir / STORE_DIR,
        low_res,
        probs,
        datamodule.targets("test"),
        [r.image_id for r in records],
        [r.city for r in records],
        provenance,
    )
    return open_store(run_dir)


def reusable_store(run_dir: Path, provenance: dict[str, Any], image_ids: list[str]) -> MaskStore | None:
    """The run's existing mask store if it was computed from exactly this provenance and these images."""
    if not provenance.get("checkpoint_sha256"):
        return None
    try:
        store = open_store(run_dir)
    except (StoreError, OSError, ValueError):
        return None
    same = all(json_equal(store.meta.get(k), v) for k, v in provenance.items() if k != "checkpoint")
    return store if same and store.image_ids == image_ids else None


def json_equal(a: Any, b: Any) -> bool:
    """Equality as stored in JSON (tuples are lists there)."""
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


class ExplainCallback(AnalysisCallback):
    """Masks, store, t-SNE (PCA to `pca_dims`, then t-SNE) and the per-run Figures 3, 4 and 6."""

    def __init__(
        self,
        threshold: float = 0.5,
        batch_size: int = 64,
        tsne_side: int = 32,
        pca_dims: int = 50,
        perplexity: float = 30.0,
        thumbnails: int = 500,
        examples_per_city: int = 3,
        seed: int = 0,
        run_seed: int | None = None,
    ) -> None:
        self.threshold = validate_threshold(threshold)
        self.batch_size = batch_size
        self.tsne_side, self.pca_dims, self.perplexity = tsne_side, pca_dims, perplexity
        self.thumbnails, self.examples_per_city = thumbnails, examples_per_city
        self.seed, self.run_seed = seed, run_seed

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Under DDP every rank explains its share first; rank 0 then writes the store and the figures."""
        if trainer.sanity_checking or trainer.world_size == 1:
            return super().on_test_end(trainer, pl_module)
        maps = gather_maps(trainer, pl_module, self.batch_size)
        run_dir = Path(trainer.default_root_dir)
        on_rank_zero(
            trainer, lambda: self.analyse(pl_module, trainer.datamodule, run_dir, trainer.loggers, maps=maps)
        )

    def analyse(
        self,
        module: pl.LightningModule,
        datamodule: Any,
        run_dir: Path,
        loggers: list[Any],
        maps: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        # After fit, the trainer knows the tested checkpoint; citylens-analyze loads best_checkpoint(run_dir).
        checkpoint = (
            module._trainer.ckpt_path if module._trainer is not None else str(best_checkpoint(run_dir))
        )
        with torch.inference_mode(False):
            store = compute_store(
                module, datamodule, run_dir, self.batch_size, self.run_seed, checkpoint, maps=maps
            )
        log.info("mask store: %d masks (%s) -> %s", len(store), store.low_res.shape[1:], store.path)
        kill_point("analysis")
        started = time.monotonic()
        log.info(
            "t-SNE of %d masks (PCA to %d dims, perplexity %g)...", len(store), self.pca_dims, self.perplexity
        )
        coords = embed_masks(
            (m for _, m in store.chunks(512)), self.tsne_side, self.pca_dims, self.perplexity, self.seed
        )
        log.info("t-SNE done in %.1f s", time.monotonic() - started)
        table = pd.DataFrame(
            {
                "image_id": store.image_ids,
                "city": store.cities,
                "predicted": [datamodule.cities[i] for i in store.preds],
                "x": coords[:, 0],
                "y": coords[:, 1],
            }
        )
        with atomic_path(run_dir / "tsne.csv") as tmp:
            table.to_csv(tmp, index=False)
        name = f"{store.meta['arch']}-s{store.meta['seed']}"
        paths = {
            "fig3_tsne": figures.save(
                figures.tsne_scatter(
                    coords, store.targets, datamodule.cities, f"{name}: t-SNE of masks (Fig. 3)"
                ),
                run_dir / "figures" / "fig3_tsne.png",
            ),
            "fig4_explanations": self._figure4(store, datamodule, coords, run_dir, name),
            "fig6_examples": self._figure6(store, datamodule, run_dir, name),
        }
        log_artifacts(loggers, images=paths, tables={"tsne": table})

    def _views(self, datamodule: Any, indices: np.ndarray) -> np.ndarray:
        views = datamodule.cache.images()
        records = datamodule.splits["test"]
        return np.stack([views[datamodule.row[records[i].image_id]] for i in indices])

    def _figure4(
        self, store: MaskStore, datamodule: Any, coords: np.ndarray, run_dir: Path, name: str
    ) -> Path:
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.permutation(len(store))[: self.thumbnails])
        thumbs = []
        for i in range(0, len(chosen), 128):
            idx = chosen[i : i + 128]
            masks = torch.cat([store.masks(j, j + 1) for j in idx]).numpy()
            explained = torch.from_numpy(explain(self._views(datamodule, idx), masks, self.threshold))
            small = F.interpolate(explained.permute(0, 3, 1, 2).float(), size=48, mode="area")
            thumbs.append(small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
        fig = figures.tsne_thumbnails(
            coords[chosen],
            np.concatenate(thumbs),
            store.targets[chosen],
            datamodule.cities,
            f"{name}: {len(chosen)} explanations at t-SNE places (Fig. 4)",
        )
        return figures.save(fig, run_dir / "figures" / "fig4_explanations.png")

    def _figure6(self, store: MaskStore, datamodule: Any, run_dir: Path, name: str) -> Path:
        idx = sample_indices(store.targets, self.examples_per_city, self.seed)
        masks = torch.cat([store.masks(j, j + 1) for j in idx]).numpy()
        titles = [
            f"{store.image_ids[j].rsplit('/', 1)[-1]}\n{store.cities[j]} -> "
            f"{datamodule.cities[store.preds[j]]} ({store.probs[j].max():.2f})"
            for j in idx
        ]
        fig = figures.example_grid(
            self._views(datamodule, idx),
            masks,
            self.threshold,
            titles,
            f"{name}: sample test images (Fig. 6)",
        )
        return figures.save(fig, run_dir / "figures" / "fig6_examples.png")
