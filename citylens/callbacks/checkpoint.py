"""Checkpoints a killed run resumes from: last.ckpt every epoch, written atomically, with the RNG state.

Lightning's ModelCheckpoint with `save_last` and a monitored top-1 writes last.ckpt only when the epoch is a
new best, so a kill redid finished epochs; its fsspec save goes through a file in the system temp folder that
a kill leaves behind (20-126 MB each). Here last.ckpt is the last completed epoch every epoch, every save is a
temporary beside the target renamed into place, and the random state travels with the checkpoint so the
resumed epochs draw the same batches and flips as an uninterrupted run (docs/faults.md).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from citylens.faults import kill_point
from citylens.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `.<name>.tmp<pid>.ckpt` beside the target, then rename: an existing file is whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)
            kill_point("checkpoint_save")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt is rewritten after every validation, not only with a new best."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        skip = self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        if not skip and self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class ResumeState(pl.Callback):
    """Saves Python's, NumPy's and torch's random state with each checkpoint; a resumed fit restores it
    at the start of its first training epoch (after the sanity check, which draws from it too)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kill_point("train_epoch_end")
