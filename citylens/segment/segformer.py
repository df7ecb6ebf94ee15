"""SegFormer (HuggingFace transformers) ADE20K segmenters, loaded offline.

`model` is a local folder written by `save_pretrained` / `hf download --local-dir`, or a hub id already in
the HuggingFace cache; nothing is ever downloaded here. Preprocessing is done in torch on the device:
resize to the model's input resolution, ImageNet-style normalisation with the mean/std of the folder's
`preprocessor_config.json` (defaults when absent). Output channel k of an ADE20K-finetuned SegFormer is
ADE20K class k (HF id2label order, docs/paper.md), so no remapping is needed. SegFormer-B0 reaches 37.4 mIoU
on ADE20K val, B2 45.6, B5 49.6.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from citylens.core.ade20k import ADE20K_CLASSES
from citylens.core.view import IMAGENET_MEAN, IMAGENET_STD
from citylens.segment.base import (
    NUM_CLASSES,
    NetworkSegmenter,
    file_fingerprint,
    normalize,
    resize,
)

log = logging.getLogger("citylens.segment")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULT_INPUT_SIZE = 512


def _missing_weights(model: str, reason: str) -> FileNotFoundError:
    """The error for absent weights, saying how to fetch them and which config key to set."""
    hub_id = (
        model
        if "/" in model and not Path(model).is_absolute()
        else "nvidia/segformer-b0-finetuned-ade-512-512"
    )
    return FileNotFoundError(
        f"SegFormer weights {model!r} not found offline ({reason}). On a machine with network run\n"
        f"  hf download {hub_id} --local-dir /path/to/{hub_id.split('/')[-1]}\n"
        f"(older huggingface_hub: huggingface-cli download {hub_id} --local-dir ...), copy the folder here "
        "and set segmenter.model=/path/to/that/folder (or keep the hub id and fill the HuggingFace cache)."
    )


def resolve_model_dir(model: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The local folder holding `model`: the folder itself, or its snapshot in the HuggingFace cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() or not any((path / f).is_file() for f in WEIGHT_FILES):
            raise _missing_weights(str(model), f"{path} lacks config.json or {' / '.join(WEIGHT_FILES)}")
        return path
    if path.is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1:
        raise _missing_weights(str(model), "no such folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(str(model), cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as error:
        raise _missing_weights(str(model), f"not in the HuggingFace cache: {error}") from error
    if not any((snapshot / f).is_file() for f in WEIGHT_FILES):
        raise _missing_weights(str(model), f"cached snapshot {snapshot} has no weights file")
    return snapshot


def _preprocessor_settings(model_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...], int | None]:
    """(mean, std, input side) from `preprocessor_config.json`; ImageNet mean/std and None when absent."""
    config_path = model_dir / "preprocessor_config.json"
    if not config_path.is_file():
        return IMAGENET_MEAN, IMAGENET_STD, None
    config = json.loads(config_path.read_text())
    mean = tuple(config.get("image_mean") or IMAGENET_MEAN)
    std = tuple(config.get("image_std") or IMAGENET_STD)
    size = config.get("size")
    side = None
    if isinstance(size, dict) and "height" in size and size.get("height") == size.get("width"):
        side = int(size["height"])
    elif isinstance(size, dict) and "shortest_edge" in size:
        side = int(size["shortest_edge"])
    elif isinstance(size, int):
        side = size
    return mean, std, side


class SegformerSegmenter(NetworkSegmenter):
    """A HuggingFace `AutoModelForSemanticSegmentation` with 150 ADE20K labels.

    input_size: side the S x S analysis view is resized to before the network (default: the preprocessor
    config's size, else 512, the resolution the ADE20K SegFormers were finetuned at). image_mean/image_std
    override the preprocessor config.
    """

    def __init__(
        self,
        model: str | Path = "nvidia/segformer-b0-finetuned-ade-512-512",
        size: int = 224,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        input_size: int | None = None,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        bf16: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(size, device, batch_size, bf16)
        from transformers import AutoModelForSemanticSegmentation

        self.model_name = str(model)
        self.model_dir = resolve_model_dir(model, cache_dir)
        self.network = AutoModelForSemanticSegmentation.from_pretrained(self.model_dir, local_files_only=True)
        num_labels = self.network.config.num_labels
        if num_labels != NUM_CLASSES:
            raise ValueError(
                f"{self.model_name} predicts {num_labels} classes, not the {NUM_CLASSES} ADE20K classes; "
                "use an ADE20K-finetuned checkpoint (e.g. nvidia/segformer-b0-finetuned-ade-512-512)"
            )
        self._check_label_names()
        mean, std, side = _preprocessor_settings(self.model_dir)
        self.image_mean = tuple(image_mean or mean)
        self.image_std = tuple(image_std or std)
        self.input_size = int(input_size or side or DEFAULT_INPUT_SIZE)
        self.network.to(self.device, torch.float32).eval()

    def _check_label_names(self) -> None:
        """Warn when the model's channel names differ from ADE20K_CLASSES (generic LABEL_k names pass)."""
        id2label = self.network.config.id2label or {}
        names = [str(id2label.get(k, id2label.get(str(k), ""))) for k in range(NUM_CLASSES)]
        if all(name == f"LABEL_{k}" for k, name in enumerate(names)):
            return
        differ = [k for k, name in enumerate(names) if name.split(";")[0].strip() != ADE20K_CLASSES[k]]
        if differ:
            k = differ[0]
            log.warning(
                "%s: %d channel names differ from ADE20K_CLASSES (e.g. channel %d is %r, expected %r)",
                self.model_name,
                len(differ),
                k,
                names[k],
                ADE20K_CLASSES[k],
            )

    def _weights_file(self) -> Path:
        return next(self.model_dir / f for f in WEIGHT_FILES if (self.model_dir / f).is_file())

    def identity(self) -> str:
        weights = self._weights_file()
        local = Path(self.model_name).expanduser().is_dir()
        name = str(self.model_dir.resolve()) if local else self.model_name
        return (
            f"segformer(model={name},weights={weights.name}#{file_fingerprint(weights)},"
            f"config=#{file_fingerprint(self.model_dir / 'config.json')},input={self.input_size},"
            f"mean={list(self.image_mean)},std={list(self.image_std)},size={self.size})"
        )

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(resize(x, self.input_size, self.input_size), self.image_mean, self.image_std)
        return self.network(pixel_values=x).logits
