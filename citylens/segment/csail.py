"""CSAIL scene-parsing segmenters (MIT semantic-segmentation-pytorch), the paper's "ResNet50 on ADE20K".

The modules below are written here, not imported from `mit-semseg` (whose data utilities are broken on
current PyTorch, docs/paper.md), with parameter names equal to CSAIL's released `encoder_epoch_N.pth` /
`decoder_epoch_N.pth` state dicts so those files load strictly:
- encoder: their ResNet-50 with a deep stem (conv1/bn1/relu1 .. conv3/bn3/relu3, 128 channels), layer1-4;
  "resnet50dilated" turns the strides of layer3/layer4 into dilations 2/4 (output stride 8) as their
  `ResnetDilated(dilate_scale=8)` does, "resnet50" keeps output stride 32 (used with UPerNet).
- decoders: `PPMDeepsup` (pyramid pooling + deep-supervision branch, which inference skips) and `UPerNet`.
ADE20K val mIoU single scale: ResNet50dilated + PPM_deepsup 41.26, ResNet50 + UPerNet 40.44 (docs/paper.md).
CSAIL feed RGB in [0, 1] normalised with ImageNet mean/std, at shorter side 300..600 rounded up to a
multiple of 8, and average the softmax over scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from citylens.core.view import IMAGENET_MEAN, IMAGENET_STD
from citylens.segment.base import (
    NUM_CLASSES,
    NetworkSegmenter,
    file_fingerprint,
    normalize,
    resize,
    upsample,
)

ARCHS = ("resnet50dilated+ppm_deepsup", "resnet50+upernet")


def conv3x3_bn_relu(in_planes: int, out_planes: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) + BN + ReLU, CSAIL's `conv3x3_bn_relu` (state-dict names .0 and .1)."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """ResNet bottleneck 1x1 -> 3x3 (stride, dilation) -> 1x1, expansion 4."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class CsailResNet(nn.Module):
    """CSAIL's deep-stem ResNet encoder returning the four stage outputs (C2..C5).

    dilate_scale=8 reproduces `ResnetDilated(resnet50, dilate_scale=8)`: the first block of layer3 (layer4)
    keeps stride 1 with dilation 1 (2) and its other blocks use dilation 2 (4); None is their plain `Resnet`.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), dilate_scale: int | None = 8) -> None:
        super().__init__()
        if dilate_scale not in (None, 8, 16):
            raise ValueError(f"dilate_scale must be None, 8 or 16, got {dilate_scale}")
        self.inplanes = 128
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        dilation3 = 2 if dilate_scale == 8 else 1
        dilation4 = {8: 4, 16: 2}.get(dilate_scale or 0, 1)
        self.layer1 = self._make_layer(64, layers[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(256, layers[2], stride=2, dilation=dilation3)
        self.layer4 = self._make_layer(512, layers[3], stride=2, dilation=dilation4)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        """A stage; a dilated stage drops its stride and starts at half its dilation (CSAIL's rule)."""
        first_dilation = 1
        if dilation > 1:
            stride, first_dilation = 1, dilation // 2
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        stage = [Bottleneck(self.inplanes, planes, stride, first_dilation, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        stage += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def _pool_branch(fc_dim: int, scale: int) -> nn.Sequential:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(scale),
        nn.Conv2d(fc_dim, 512, kernel_size=1, bias=False),
        nn.BatchNorm2d(512),
        nn.ReLU(inplace=True),
    )


class PPMDeepsup(nn.Module):
    """CSAIL's pyramid-pooling decoder with a deep-supervision branch on C4 (training only)."""

    def __init__(
        self, num_class: int = NUM_CLASSES, fc_dim: int = 2048, pool_scales: Sequence[int] = (1, 2, 3, 6)
    ) -> None:
        super().__init__()
        self.ppm = nn.ModuleList(_pool_branch(fc_dim, scale) for scale in pool_scales)
        self.cbr_deepsup = conv3x3_bn_relu(fc_dim // 2, fc_dim // 4, 1)
        self.conv_last = nn.Sequential(
            nn.Conv2d(fc_dim + len(pool_scales) * 512, 512, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(512),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(512, num_class, kernel_size=1),
        )
        self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1, 1, 0)
        self.dropout_deepsup = nn.Dropout2d(0.1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class logits at the resolution of C5 (the deep-supervision branch is not run: inference only)."""
        conv5 = features[-1]
        size = conv5.shape[-2:]
        pooled = [
            F.interpolate(branch(conv5), size, mode="bilinear", align_corners=False) for branch in self.ppm
        ]
        return self.conv_last(torch.cat([conv5, *pooled], 1))


class UPerNet(nn.Module):
    """CSAIL's UPerNet decoder: PPM on C5, a top-down FPN over C2..C4, fusion at C2's resolution."""

    def __init__(
        self,
        num_class: int = NUM_CLASSES,
        fc_dim: int = 2048,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        fpn_inplanes: Sequence[int] = (256, 512, 1024, 2048),
        fpn_dim: int = 512,
    ) -> None:
        super().__init__()
        self.ppm_pooling = nn.ModuleList(nn.AdaptiveAvgPool2d(scale) for scale in pool_scales)
        self.ppm_conv = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(fc_dim, 512, kernel_size=1, bias=False), nn.BatchNorm2d(512), nn.ReLU(True)
            )
            for _ in pool_scales
        )
        self.ppm_last_conv = conv3x3_bn_relu(fc_dim + len(pool_scales) * 512, fpn_dim, 1)
        self.fpn_in = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, fpn_dim, kernel_size=1, bias=False), nn.BatchNorm2d(fpn_dim), nn.ReLU(True)
            )
            for c in fpn_inplanes[:-1]
        )
        self.fpn_out = nn.ModuleList(
            nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, 1)) for _ in fpn_inplanes[:-1]
        )
        self.conv_last = nn.Sequential(
            conv3x3_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim, 1),
            nn.Conv2d(fpn_dim, num_class, kernel_size=1),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class logits at the resolution of C2 (stride 4)."""
        conv5 = features[-1]
        size = conv5.shape[-2:]
        pooled = [
            conv(F.interpolate(pool(conv5), size, mode="bilinear", align_corners=False))
            for pool, conv in zip(self.ppm_pooling, self.ppm_conv, strict=True)
        ]
        f = self.ppm_last_conv(torch.cat([conv5, *pooled], 1))
        pyramid = [f]
        for i in reversed(range(len(features) - 1)):
            lateral = self.fpn_in[i](features[i])
            f = lateral + F.interpolate(f, lateral.shape[-2:], mode="bilinear", align_corners=False)
            pyramid.append(self.fpn_out[i](f))
        pyramid.reverse()
        out_size = pyramid[0].shape[-2:]
        fused = [pyramid[0]] + [
            F.interpolate(p, out_size, mode="bilinear", align_corners=False) for p in pyramid[1:]
        ]
        return self.conv_last(torch.cat(fused, 1))


def build_csail(arch: str) -> tuple[nn.Module, nn.Module]:
    """Randomly initialised (encoder, decoder) of a CSAIL architecture, named as their checkpoints."""
    if arch == "resnet50dilated+ppm_deepsup":
        return CsailResNet(dilate_scale=8), PPMDeepsup(NUM_CLASSES, fc_dim=2048)
    if arch == "resnet50+upernet":
        return CsailResNet(dilate_scale=None), UPerNet(NUM_CLASSES, fc_dim=2048, fpn_dim=512)
    raise ValueError(f"unknown CSAIL arch {arch!r}; choose one of {ARCHS}")


def load_state_dict_strict(module: nn.Module, path: Path) -> None:
    """Load a CSAIL checkpoint, refusing any missing or unexpected parameter.

    Only BatchNorm `num_batches_tracked` counters may be absent (checkpoints from older PyTorch lack them;
    they do not affect inference). A `module.` prefix from DataParallel is stripped.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    hint = "check that segmenter.arch matches the checkpoint"
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match {type(module).__name__} ({hint}): {error}") from error
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = result.unexpected_keys
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match {type(module).__name__} ({hint}): "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )


class CsailSegmenter(NetworkSegmenter):
    """A CSAIL encoder/decoder pair from `encoder_epoch_N.pth` / `decoder_epoch_N.pth`.

    scales: input sides the S x S analysis view is resized to (rounded up to a multiple of 8, CSAIL's
    padding constant); with several, softmax scores are averaged over them as in CSAIL's evaluation.
    """

    def __init__(
        self,
        encoder_path: str | Path,
        decoder_path: str | Path,
        arch: str = "resnet50dilated+ppm_deepsup",
        size: int = 224,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        scales: Sequence[int] = (480,),
        bf16: bool = False,
    ) -> None:
        super().__init__(size, device, batch_size, bf16)
        self.encoder_path, self.decoder_path = Path(encoder_path), Path(decoder_path)
        self.arch = arch
        self.scales = tuple(8 * math.ceil(int(s) / 8) for s in scales)
        if not self.scales:
            raise ValueError("scales must name at least one input side")
        for path in (self.encoder_path, self.decoder_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"CSAIL checkpoint {path} not found. Download the {arch} encoder_epoch_N.pth and "
                    "decoder_epoch_N.pth from the CSAIL semantic-segmentation-pytorch model zoo on a machine "
                    "with network, then set segmenter.encoder_path and segmenter.decoder_path"
                )
        self.encoder, self.decoder = build_csail(arch)
        load_state_dict_strict(self.encoder, self.encoder_path)
        load_state_dict_strict(self.decoder, self.decoder_path)
        self.encoder.to(self.device).eval()
        self.decoder.to(self.device).eval()

    def identity(self) -> str:
        enc, dec = self.encoder_path.resolve(), self.decoder_path.resolve()
        return (
            f"csail(arch={self.arch},encoder={enc}#{file_fingerprint(enc)},decoder={dec}#{file_fingerprint(dec)},"
            f"scales={list(self.scales)},size={self.size})"
        )

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at one scale; averaged softmax probabilities (upsampled to S) over several."""
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        if len(self.scales) == 1:
            return self.decoder(self.encoder(resize(x, self.scales[0], self.scales[0])))
        probs = 0
        for side in self.scales:
            logits = self.decoder(self.encoder(resize(x, side, side)))
            probs = probs + upsample(logits.float(), self.size).softmax(dim=1)
        return probs / len(self.scales)
