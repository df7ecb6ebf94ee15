"""The folder dataset reader: layout errors name the key; real photos decode through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylens.core.errors import ConfigError
from citylens.data.cache import ViewCache
from citylens.data.folder import scan_folder


def test_scan_folder_errors_name_key_and_layout(tmp_path: Path):
    with pytest.raises(ConfigError, match="data.root.*<city>"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="need at least 2"):
        scan_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        scan_folder(tmp_path)


def test_real_photos_decode_through_the_folder_reader(real_photos, tmp_path: Path):

    root = tmp_path / "real"
    for city in ("oxford", "paris_sacre_coeur", "tokyo247", "san_francisco"):
        files = [p for p in (real_photos / city).rglob("*") if p.suffix.lower() in (".jpg", ".png")]
        for p in files[:4]:
            (root / city).mkdir(parents=True, exist_ok=True)
            (root / city / p.name).write_bytes(p.read_bytes())
    # Too few photos per city to split (tokyo247 has one), so the view cache is built directly.
    records = scan_folder(root)
    cache = ViewCache(tmp_path / "cache", records, 48)
    cache.build(progress=False)
    assert not cache.failures() and len(records) >= 10
    views = cache.images()
    assert views.shape == (len(records), 48, 48, 3) and views.std() > 10
