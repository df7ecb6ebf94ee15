"""CityClassifier: the LightningModule that trains one city classifier (cross-entropy, Adam, step decay)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from citylens.core.view import to_input
from citylens.models.build import build_model


class CityClassifier(pl.LightningModule):
    """Wraps build_model(arch, ...) with the paper's training recipe; all values come from model.* config.

    The paper: Adam, lr 1e-4, multiplied by 0.1 every 10 epochs (docs/paper.md).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        input_size: int = 224,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_step_epochs: int = 10,
        lr_gamma: float = 0.1,
        weights: str | None = None,
        channels_last: bool = False,
        fused_optimizer: bool = True,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"model.lr: must be positive, got {lr}")
        if lr_step_epochs < 1 or not 0 < lr_gamma <= 1:
            raise ValueError(f"model.lr_step_epochs / model.lr_gamma: got {lr_step_epochs} / {lr_gamma}")
        self.save_hyperparameters()
        # The explainer's layer is chosen by the analysis (explainer.layer), not by the model.
        self.network = build_model(arch, num_classes, input_size, weights)
        # channels-last (NHWC) weights and inputs: faster GPU convolutions (equal up to rounding).
        self.channels_last = channels_last
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        self.loss = nn.CrossEntropyLoss()
        self.acc = nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes, average="micro") for s in ("tr", "va", "te")}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch: uint8 views (the data loaders') are normalised here, on the batch's device;
        float input is taken as already normalised."""
        if x.dtype == torch.uint8:
            x = to_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.network(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        acc = self.acc[stage[:2]]
        acc(logits, y)
        on_step = stage == "train"
        # Under DDP the loss is averaged over the ranks (the accuracy metric syncs by itself).
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=True,
        )
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # The fused kernel updates parameters and both moments in one pass over memory: VGG11's 129M
        # parameters make the optimizer step, not the convolutions, the cost of a small-batch CPU step
        # (2-2.5x faster training measured at 64 px, batch 16).
        optimizer = torch.optim.Adam(
            self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=hp.fused_optimizer
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, hp.lr_step_epochs, hp.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
