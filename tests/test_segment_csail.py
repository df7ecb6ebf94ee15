"""CSAIL segmenters, loaded from random state dicts of our modules saved as CSAIL names them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from citylens.core.view import IMAGENET_MEAN, IMAGENET_STD
from citylens.segment import (
    CSAIL_ARCHS,
    CsailResNet,
    CsailSegmenter,
    build_csail,
)

# One intra-op thread for the whole module (the fixture says why).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def csail_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Random encoder/decoder state dicts of both architectures, saved as CSAIL names them."""
    checkpoints = {}
    for arch in CSAIL_ARCHS:
        torch.manual_seed(0)
        encoder, decoder = build_csail(arch)
        folder = tmp_path_factory.mktemp("csail")
        torch.save(encoder.state_dict(), folder / "encoder_epoch_1.pth")
        torch.save(decoder.state_dict(), folder / "decoder_epoch_1.pth")
        checkpoints[arch] = (folder / "encoder_epoch_1.pth", folder / "decoder_epoch_1.pth")
    return checkpoints


@pytest.mark.parametrize("arch", CSAIL_ARCHS)
def test_csail_loads_normalises_resizes_and_indexes(
    image_records, random_images, csail_checkpoints: dict, arch: str
) -> None:
    encoder_path, decoder_path = csail_checkpoints[arch]
    size = 24
    segmenter = CsailSegmenter(
        encoder_path, decoder_path, arch=arch, size=size, device="cpu", batch_size=2, scales=(30,)
    )
    assert segmenter.scales == (32,)
    seen: list[torch.Tensor] = []
    segmenter.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    images = random_images(3, size)
    out = segmenter(images, image_records(3))
    assert out.dtype == torch.uint8 and out.shape == (3, size, size)
    assert int(out.max()) < 150
    assert [tuple(x.shape) for x in seen] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    x = F.interpolate(
        images.float() / 255, size=(32, 32), mode="bilinear", align_corners=False, antialias=True
    )
    expected = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(torch.cat(seen), expected)
    last = segmenter.decoder.conv_last[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[43] = 10.0
    assert (segmenter(images[:2], image_records(2)) == 43).all()
    identity = segmenter.identity()
    assert identity.startswith(f"csail(arch={arch},") and str(encoder_path.resolve()) in identity


def test_csail_multi_scale_and_strict_loading(
    image_records, random_images, csail_checkpoints: dict, tmp_path: Path
) -> None:
    arch = "resnet50dilated+ppm_deepsup"
    encoder_path, decoder_path = csail_checkpoints[arch]
    segmenter = CsailSegmenter(encoder_path, decoder_path, arch=arch, size=16, device="cpu", scales=(16, 24))
    out = segmenter(random_images(1, 16), image_records(1))
    assert out.shape == (1, 16, 16) and int(out.max()) < 150
    with pytest.raises(ValueError, match="segmenter.arch"):
        CsailSegmenter(encoder_path, decoder_path, arch="resnet50+upernet", device="cpu")
    with pytest.raises(FileNotFoundError, match="segmenter.encoder_path"):
        CsailSegmenter(tmp_path / "encoder_epoch_20.pth", decoder_path, device="cpu")


def _csail_nostride_dilate(module: torch.nn.Module, dilate: int) -> None:
    """CSAIL's `ResnetDilated._nostride_dilate`, restated to check our direct construction against it."""
    if isinstance(module, torch.nn.Conv2d):
        if module.stride == (2, 2):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = module.padding = (dilate // 2, dilate // 2)
        elif module.kernel_size == (3, 3):
            module.dilation = module.padding = (dilate, dilate)


def test_dilated_resnet_matches_csail_rule() -> None:
    plain, dilated = CsailResNet(dilate_scale=None), CsailResNet(dilate_scale=8)
    plain.layer3.apply(lambda m: _csail_nostride_dilate(m, 2))
    plain.layer4.apply(lambda m: _csail_nostride_dilate(m, 4))
    convs_plain = {n: m for n, m in plain.named_modules() if isinstance(m, torch.nn.Conv2d)}
    convs_dilated = {n: m for n, m in dilated.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert convs_plain.keys() == convs_dilated.keys()
    for name, conv in convs_plain.items():
        other = convs_dilated[name]
        assert (conv.stride, conv.dilation, conv.padding) == (other.stride, other.dilation, other.padding), (
            name
        )
    assert list(plain.state_dict()) == list(dilated.state_dict())
    assert "layer4.2.conv3.weight" in dilated.state_dict() and "relu1" in dict(dilated.named_children())
