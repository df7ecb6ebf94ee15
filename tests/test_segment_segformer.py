"""Segmenters: ground truth, SegFormer (tiny random HF model) and CSAIL (random state dicts of our modules).

Nothing is downloaded: the networks are built from configs with random weights and saved to temp folders
exactly as released checkpoints are laid out, then loaded through the segmenters' public constructors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from citylens.core.ade20k import UNLABELLED
from citylens.core.view import IMAGENET_MEAN, IMAGENET_STD, label_view
from citylens.segment import (
    CSAIL_ARCHS,
    CsailResNet,
    CsailSegmenter,
    GroundTruthSegmenter,
    SegformerSegmenter,
    ade20k_annotation_to_labels,
    build_csail,
)

# One intra-op thread for the whole module (the fixture says why).
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- ground truth


def test_ground_truth_nearest_resampling_and_crop(image_records, tmp_path: Path) -> None:
    """A 4x8 label map to a 2x2 view: rows 1, 3 and (after the centre crop) columns 3, 5 survive."""
    label = np.arange(32, dtype=np.uint8).reshape(4, 8)
    label[3, 5] = UNLABELLED
    path = tmp_path / "label.png"
    Image.fromarray(label).save(path)
    segmenter = GroundTruthSegmenter(size=2)
    out = segmenter(torch.zeros((1, 3, 2, 2), dtype=torch.uint8), image_records(1, [path]))
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 2)
    assert out[0].tolist() == [[11, 13], [27, UNLABELLED]]


def test_ground_truth_errors(image_records, tmp_path: Path) -> None:
    segmenter = GroundTruthSegmenter(size=4)
    images = torch.zeros((1, 3, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="city/img0.jpg"):
        segmenter(images, image_records(1))
    path = tmp_path / "ade_style.png"
    Image.fromarray(np.full((4, 4), 150, dtype=np.uint8)).save(path)
    with pytest.raises(ValueError, match="ade20k_annotation=True"):
        segmenter(images, image_records(1, [path]))
    with pytest.raises(ValueError, match="uint8 images"):
        segmenter(torch.zeros((1, 3, 5, 5), dtype=torch.uint8), image_records(1, [path]))


def test_ade20k_annotation_conversion() -> None:
    annotation = np.array([[0, 1, 2], [44, 150, 0]], dtype=np.uint8)
    assert ade20k_annotation_to_labels(annotation).tolist() == [[255, 0, 1], [43, 149, 255]]
    with pytest.raises(ValueError, match="out of range"):
        ade20k_annotation_to_labels(np.array([[151]], dtype=np.uint8))


def test_ground_truth_on_real_ade20k_annotations(image_records, real_photos: Path) -> None:
    ade20k_dir = real_photos / "ade20k" / "sceneparsing150"
    paths = sorted((ade20k_dir / "annotations").glob("*.png"))
    assert paths
    size = 96
    segmenter = GroundTruthSegmenter(size=size, ade20k_annotation=True)
    out = segmenter(
        torch.zeros((len(paths), 3, size, size), dtype=torch.uint8), image_records(len(paths), paths)
    )
    assert out.shape == (len(paths), size, size)
    for i, path in enumerate(paths):
        raw = np.asarray(Image.open(path))
        converted = np.where(raw == 0, 255, raw.astype(np.int16) - 1).astype(np.uint8)
        np.testing.assert_array_equal(out[i].numpy(), label_view(converted, size))
        labels = set(np.unique(out[i].numpy()).tolist())
        assert labels <= {v - 1 for v in np.unique(raw).tolist() if v > 0} | {UNLABELLED}
        assert max(labels - {UNLABELLED}) < 150
        image = Image.open(ade20k_dir / "images" / path.with_suffix(".jpg").name)
        assert image.size == Image.open(path).size


# ---------------------------------------------------------------- SegFormer


def _save_tiny_segformer(folder: Path, num_labels: int = 150, seed: int = 0) -> Path:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(seed)
    config = SegformerConfig(
        num_labels=num_labels,
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1],
        depths=[1, 1, 1, 1],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
    )
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    processor = SegformerImageProcessor(
        size={"height": 64, "width": 64}, image_mean=[0.5, 0.4, 0.3], image_std=[0.25, 0.2, 0.3]
    )
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return _save_tiny_segformer(tmp_path_factory.mktemp("segformer"))


def test_segformer_preprocessing_resizing_and_output(
    image_records, random_images, tiny_segformer: Path
) -> None:
    size = 40
    segmenter = SegformerSegmenter(str(tiny_segformer), size=size, device="cpu", batch_size=3)
    assert segmenter.input_size == 64
    assert segmenter.image_mean == (0.5, 0.4, 0.3) and segmenter.image_std == (0.25, 0.2, 0.3)
    seen: list[torch.Tensor] = []
    segmenter.network.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True
    )
    images = random_images(5, size)
    out = segmenter(images, image_records(5))
    assert out.dtype == torch.uint8 and out.shape == (5, size, size)
    assert int(out.max()) < 150
    assert [tuple(x.shape) for x in seen] == [(3, 3, 64, 64), (2, 3, 64, 64)]
    x = images.float() / 255
    x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    mean, std = (
        torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
        torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1),
    )
    expected_input = (x - mean) / std
    torch.testing.assert_close(torch.cat(seen), expected_input)
    with torch.inference_mode():
        logits = segmenter.network(pixel_values=expected_input).logits
    assert logits.shape == (5, 150, 16, 16)
    expected = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(out, expected.to(torch.uint8))


@pytest.mark.parametrize("winner", [0, 43, 149])
def test_segformer_channel_k_is_ade20k_class_k(
    image_records, random_images, tiny_segformer: Path, winner: int
) -> None:
    segmenter = SegformerSegmenter(tiny_segformer, size=24, device="cpu")
    classifier = segmenter.network.decode_head.classifier
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.bias[winner] = 10.0
    out = segmenter(random_images(2, 24), image_records(2))
    assert (out == winner).all()


def test_segformer_identity_is_stable_and_tracks_weights(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    folder = _save_tiny_segformer(tmp_path / "m", seed=0)
    first = SegformerSegmenter(folder, size=24, device="cpu").identity()
    assert first == SegformerSegmenter(folder, size=24, device="cpu").identity()
    assert first != SegformerSegmenter(folder, size=32, device="cpu").identity()
    _save_tiny_segformer(folder, seed=1)
    assert first != SegformerSegmenter(folder, size=24, device="cpu").identity()
    assert first.startswith("segformer(") and str(folder.resolve()) in first


def test_segformer_missing_weights_says_how_to_get_them(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError) as error:
        SegformerSegmenter(str(tmp_path / "absent"), device="cpu")
    assert "segmenter.model" in str(error.value) and "download" in str(error.value)
    hub_id = "nvidia/segformer-b0-finetuned-ade-512-512"
    with pytest.raises(FileNotFoundError) as error:
        SegformerSegmenter(hub_id, device="cpu", cache_dir=tmp_path / "empty_hf_cache")
    message = str(error.value)
    assert f"hf download {hub_id} --local-dir" in message and "huggingface-cli download" in message
    assert "segmenter.model" in message
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    with pytest.raises(FileNotFoundError, match="segmenter.model"):
        SegformerSegmenter(tmp_path / "no_weights", device="cpu")


def test_segformer_refuses_non_ade20k_head(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    folder = _save_tiny_segformer(tmp_path / "voc", num_labels=21)
    with pytest.raises(ValueError, match="150"):
        SegformerSegmenter(folder, device="cpu")


# ---------------------------------------------------------------- CSAIL


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
