"""Checkpoints a killed run resumes from: atomic saves that leave a whole file, last.ckpt every epoch (not
only on a new best), and the random state saved with a checkpoint and restored from it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from citylens.app.callbacks.checkpoint import AtomicCheckpointIO, ResumeState, RunCheckpoint


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return None


# ---------------------------------------------------------------- atomic saves


def test_save_and_load_round_trip_without_leftovers(tmp_path: Path):
    io = AtomicCheckpointIO()
    state = {"epoch": 3, "state_dict": {"w": torch.arange(6.0).reshape(2, 3)}}
    target = tmp_path / "ckpts" / "last.ckpt"  # the folder is made
    io.save_checkpoint(state, target)
    loaded = io.load_checkpoint(target)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    io.save_checkpoint({"epoch": 4, "state_dict": {}}, target)  # replaces the file
    assert io.load_checkpoint(target)["epoch"] == 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_failing_save_leaves_the_old_checkpoint_whole_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)
    before = target.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, path, *args, **kwargs):
        real_save(obj, path)
        Path(path).write_bytes(Path(path).read_bytes()[:10])  # a torn write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "big": torch.zeros(1000)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    monkeypatch.undo()
    assert io.load_checkpoint(target)["epoch"] == 1


def test_a_process_killed_while_saving_leaves_the_old_checkpoint(tmp_path: Path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)
    script = textwrap.dedent(
        f"""
        import torch
        from citylens.app.callbacks.checkpoint import AtomicCheckpointIO
        AtomicCheckpointIO().save_checkpoint({{"epoch": 2, "w": torch.zeros(100)}}, {str(target)!r})
        """
    )
    env = {**os.environ, "CITYLENS_KILL_AT": "checkpoint_save", "CITYLENS_KILL_AFTER": "0"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILL after the temporary was written
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.tmp") and leftovers[0].endswith(".ckpt")


# ---------------------------------------------------------------- last.ckpt every epoch


class _Worsening(pl.LightningModule):
    """A tiny model whose val/acc is best in epoch 0 and worse every epoch after."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 1.0 - 0.1 * self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, checkpoint: ModelCheckpoint, epochs: int = 3) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    loader = DataLoader(data, batch_size=4)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, callbacks=[checkpoint],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    trainer.fit(_Worsening(), loader, loader)


def _settings(folder: Path) -> dict:
    return dict(
        dirpath=folder, monitor="val/acc", mode="max", save_last=True, filename="best",
        auto_insert_metric_name=False, enable_version_counter=False,
    )  # fmt: skip


def test_last_is_the_last_epoch_while_best_stays_the_best(tmp_path: Path):
    folder = tmp_path / "run"
    checkpoint = RunCheckpoint(**_settings(folder))
    _fit(tmp_path, checkpoint)
    best = torch.load(folder / "best.ckpt", weights_only=False)
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert best["epoch"] == 0 and last["epoch"] == 2
    assert last["global_step"] == 3 * 2  # two batches per epoch, three epochs
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert checkpoint.best_model_score.item() == pytest.approx(1.0)


def test_lightnings_own_checkpoint_would_keep_an_old_last(tmp_path: Path):
    """What RunCheckpoint fixes: the plain callback leaves last.ckpt at the best epoch (so the test above
    tells the two apart)."""
    folder = tmp_path / "run"
    _fit(tmp_path, ModelCheckpoint(**_settings(folder)))
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 0


# ---------------------------------------------------------------- random state


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_random_state_is_saved_and_restored(tmp_path: Path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    callback = ResumeState()
    state = callback.state_dict()
    torch.save(state, tmp_path / "state.pt")
    expected = _draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    assert _draws() != expected
    # A checkpoint holds plain lists and tensors: it loads with weights_only=True.
    callback.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert _draws() == expected
    callback.load_state_dict(state)
    assert _draws() == expected


def test_random_state_travels_in_a_lightning_checkpoint(tmp_path: Path):
    folder = tmp_path / "run"
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        callbacks=[ResumeState()], enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(_Worsening(), DataLoader(data, batch_size=4))
    trainer.save_checkpoint(folder / "last.ckpt")
    expected = _draws()
    saved = torch.load(folder / "last.ckpt", weights_only=False)["callbacks"]
    (state,) = [v for k, v in saved.items() if "ResumeState" in k]
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    ResumeState().load_state_dict(state)
    assert _draws() == expected
