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

from citylens.core.faults import kill_point
from citylens.core.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `.<name>.tmp<pid>.ckpt` beside the target, then rename: an existing file is whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)
            kill_point("checkpoint_save")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose last.ckpt is rewritten at every save (each epoch), not only on a new best."""

    def _save_last_too(self, trainer: pl.Trainer) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(
            trainer
        )
        super().on_train_epoch_end(trainer, pl_module)
        if due:
            self._save_last_too(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(
            trainer
        )
        super().on_validation_end(trainer, pl_module)
        if due:
            self._save_last_too(trainer)


class ResumeState(pl.Callback):
    """Saves Python's, NumPy's and torch's random state with each checkpoint and restores it on resume.

    Lightning creates the first epoch's batch iterator right after restoring (its sanity check runs under
    isolate_rng), so restoring in load_state_dict gives the resumed epoch the batches and flips the
    uninterrupted run drew after that checkpoint.
    """

    def state_dict(self) -> dict[str, Any]:
        np_state, py_state = np.random.get_state(), random.getstate()
        return {
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        kill_point("train_batch")
