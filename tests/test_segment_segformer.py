"""SegformerSegmenter on a tiny random Hugging Face model.

Nothing is downloaded: the networks are built from configs with random weights and saved to temp folders
exactly as released checkpoints are laid out, then loaded through the segmenters' public constructors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from citylens.segment import (
    SegformerSegmenter,
)

# One intra-op thread for the whole module (the fixture says why).
pytestmark = pytest.mark.usefixtures("one_thread")


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
