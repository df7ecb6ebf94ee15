"""ImageRecord: one image of a dataset, with its stable id, city and place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One dataset image.

    image_id: the path relative to the dataset root (posix), stable across machines and runs.
    place: the place (panorama) id; all views of one place land in the same split.
    label_path: an optional lossless ADE20K label map of the image (uint8, 255 = unlabelled).
    """

    image_id: str
    path: Path
    city: str
    place: str
    label_path: Path | None = None
