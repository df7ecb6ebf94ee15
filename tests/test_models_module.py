"""CityClassifier: the network it wraps, cross-entropy, accuracy, Adam with step decay, saved settings."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from citylens.models.build import build_model
from citylens.models.module import CityClassifier


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return None


def _batch(n: int = 6, size: int = 32, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=generator)
    y = torch.randint(0, classes, (n,), generator=generator)
    return x, y


@pytest.mark.parametrize(("arch", "size"), [("simple", 32), ("simpler", 48), ("resnet18", 32), ("vgg11", 32)])
def test_wraps_the_built_network(arch: str, size: int):
    torch.manual_seed(0)
    module = CityClassifier(arch, 3, input_size=size).eval()
    torch.manual_seed(0)
    network = build_model(arch, 3, size)
    x, _ = _batch(2, size)
    with torch.no_grad():
        logits = module(x)
        assert logits.shape == (2, 3)
        assert torch.equal(logits, network.eval()(x))  # same seed, same builder: the same weights


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_loss_is_cross_entropy_and_accuracy_counts_the_argmax():
    torch.manual_seed(0)
    module = CityClassifier("simple", 3, input_size=32)
    x, y = _batch()
    loss = module.training_step((x, y), 0)
    module.eval()
    with torch.no_grad():
        logits = module.network(x)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert loss.requires_grad  # the value Lightning back-propagates
    expected = (logits.argmax(1) == y).float().mean().item()
    assert module.acc["tr"].compute().item() == pytest.approx(expected)
    module.validation_step((x, y), 0)
    module.test_step((x[:3], y[:3]), 0)
    assert module.acc["te"].compute().item() == pytest.approx((logits[:3].argmax(1) == y[:3]).float().mean())


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    plain = CityClassifier("simple", 2, input_size=32).eval()
    torch.manual_seed(0)
    nhwc = CityClassifier("simple", 2, input_size=32, channels_last=True).eval()
    conv = nhwc.network.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, _ = _batch(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)


def test_configure_optimizers_adam_and_step_decay():
    module = CityClassifier(
        "simple", 2, input_size=32, lr=3e-3, weight_decay=0.01, lr_step_epochs=2, lr_gamma=0.5,
        fused_optimizer=False,
    )  # fmt: skip
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert config["lr_scheduler"]["interval"] == "epoch"
    group = optimizer.param_groups[0]
    assert group["lr"] == 3e-3 and group["weight_decay"] == 0.01 and not group["fused"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(params) == len(list(module.network.parameters()))
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4])


def test_fused_optimizer_by_default():
    optimizer = CityClassifier("simple", 2, input_size=32).configure_optimizers()["optimizer"]
    group = optimizer.param_groups[0]
    assert group["fused"] and group["lr"] == 1e-4 and group["weight_decay"] == 0.0


def test_hparams_are_saved_and_rebuild_the_module():
    torch.manual_seed(0)
    module = CityClassifier("simpler", 4, input_size=48, lr=2e-3, lr_step_epochs=3, lr_gamma=0.2)
    assert dict(module.hparams) == {
        "arch": "simpler",
        "num_classes": 4,
        "input_size": 48,
        "lr": 2e-3,
        "weight_decay": 0.0,
        "lr_step_epochs": 3,
        "lr_gamma": 0.2,
        "weights": None,
        "channels_last": False,
        "fused_optimizer": True,
    }
    again = CityClassifier(**module.hparams)
    again.load_state_dict(module.state_dict())
    x, _ = _batch(2, 48)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), module.eval()(x))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "model.lr: must be positive, got 0.0"),
        ({"lr": -1e-3}, "model.lr: must be positive"),
        ({"lr_step_epochs": 0}, "model.lr_step_epochs / model.lr_gamma: got 0 / 0.1"),
        ({"lr_gamma": 0.0}, "model.lr_step_epochs / model.lr_gamma: got 10 / 0.0"),
        ({"lr_gamma": 1.5}, "got 10 / 1.5"),
    ],
)
def test_bad_settings_are_refused_by_key(changes, message):
    with pytest.raises(ValueError, match=message):
        CityClassifier("simple", 2, input_size=32, **changes)


def test_a_fit_logs_loss_and_accuracy_and_steps_the_rate_per_epoch(tmp_path):
    torch.manual_seed(0)
    x, y = _batch(8, 32, classes=2)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    module = CityClassifier("simple", 2, input_size=32, lr=1e-3, lr_step_epochs=1, lr_gamma=0.5)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, loader, loader)
    metrics = trainer.callback_metrics
    assert {"train/loss_epoch", "train/acc", "val/loss", "val/acc"} <= set(metrics)
    module.eval()
    with torch.no_grad():
        logits = module(x)
    assert metrics["val/loss"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert metrics["val/acc"].item() == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)
