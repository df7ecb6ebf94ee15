"""Ground-truth "segmenter": reads each image's stored label map instead of running a network.

Used for synthetic data (whose generator writes exact label maps) and for checking the pipeline on ADE20K
images with their human annotations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from citylens.core.ade20k import UNLABELLED
from citylens.core.records import ImageRecord
from citylens.core.view import label_view
from citylens.segment.base import NUM_CLASSES, Segmenter


def ade20k_annotation_to_labels(annotation: np.ndarray) -> np.ndarray:
    """Convert an ADE20K scene-parsing annotation (0 = unlabelled, k = class k-1) to citylens indices."""
    annotation = np.asarray(annotation)
    if annotation.size and int(annotation.max()) > NUM_CLASSES:
        raise ValueError(f"ADE20K annotation value {int(annotation.max())} is out of range 0..{NUM_CLASSES}")
    labels = annotation.astype(np.int16) - 1
    labels[annotation == 0] = UNLABELLED
    return labels.astype(np.uint8)


class GroundTruthSegmenter(Segmenter):
    """Label maps from each record's `label_path`, brought into the analysis view with nearest resampling.

    By default the PNG holds citylens indices (0..149, 255 = unlabelled). With `ade20k_annotation=True` it
    holds ADE20K annotation values (0 = unlabelled, k = class k-1) and is converted.
    """

    def __init__(self, size: int, ade20k_annotation: bool = False) -> None:
        self.size = size
        self.ade20k_annotation = ade20k_annotation

    def identity(self) -> str:
        fmt = "ade20k_annotation" if self.ade20k_annotation else "citylens"
        return f"ground_truth(format={fmt},size={self.size})"

    def load(self, record: ImageRecord) -> np.ndarray:
        """The record's label map in the analysis view, (S, S) uint8 of citylens indices."""
        if record.label_path is None:
            raise ValueError(
                f"image {record.image_id!r} has no label map (record.label_path is None): the ground-truth "
                "segmenter needs one for every image; choose a network segmenter for this dataset"
            )
        with Image.open(record.label_path) as image:
            if image.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(
                    f"label map of image {record.image_id!r} ({record.label_path}) has mode {image.mode}; "
                    "expected a single-channel PNG of class indices"
                )
            raw = np.asarray(image)
        if self.ade20k_annotation:
            labels = ade20k_annotation_to_labels(raw)
        else:
            bad = (raw >= NUM_CLASSES) & (raw != UNLABELLED)
            if bad.any():
                raise ValueError(
                    f"label map of image {record.image_id!r} ({record.label_path}) holds value "
                    f"{int(raw[bad].flat[0])}, outside 0..{NUM_CLASSES - 1} and {UNLABELLED}; "
                    "for ADE20K annotation PNGs set ade20k_annotation=True"
                )
            labels = raw.astype(np.uint8)
        return label_view(labels, self.size)

    def __call__(self, images: torch.Tensor, records: Sequence[ImageRecord]) -> torch.Tensor:
        self._check_inputs(images, records)
        out = torch.empty((len(records), self.size, self.size), dtype=torch.uint8)
        for i, record in enumerate(records):
            out[i] = torch.from_numpy(np.array(self.load(record)))
        return out
