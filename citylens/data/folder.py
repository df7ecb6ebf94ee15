"""Folder datasets: root/<city>/**/*.{jpg,jpeg,png}, city = first folder level, id = path relative to root."""

from __future__ import annotations

from pathlib import Path

from citylens.core.errors import ConfigError
from citylens.core.records import ImageRecord

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIX = ".labels.png"


def label_path_for(image: Path) -> Path:
    """Where a folder dataset keeps the lossless label map of an image: <stem>.labels.png beside it."""
    return image.with_name(image.name.rsplit(".", 1)[0] + LABEL_SUFFIX)


def scan_folder(root: Path | str, key: str = "data.root") -> list[ImageRecord]:
    """List every image under root/<city>/ (recursively), sorted by id; label maps beside images are attached.

    Raises ConfigError naming `key` and the expected layout when the root is missing,
    has no city folders, or a city folder holds no image.
    """
    root = Path(root).expanduser()
    layout = f"expected {root}/<city>/**/*.jpg|jpeg|png (one folder per city)"
    if not root.is_dir():
        raise ConfigError(f"{key}: {root} is not a directory; {layout}")
    cities = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if len(cities) < 2:
        raise ConfigError(f"{key}: {root} has {len(cities)} city folder(s), need at least 2; {layout}")
    records = []
    for city_dir in cities:
        files = sorted(
            p
            for p in city_dir.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(LABEL_SUFFIX) and p.is_file()
        )
        if not files:
            raise ConfigError(f"{key}: city folder {city_dir} holds no .jpg/.jpeg/.png image; {layout}")
        for path in files:
            image_id = path.relative_to(root).as_posix()
            label = label_path_for(path)
            records.append(
                ImageRecord(image_id, path, city_dir.name, image_id, label if label.is_file() else None)
            )
    return records
