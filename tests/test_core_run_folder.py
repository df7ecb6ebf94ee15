"""A run folder: the names of its analysis layout and its state (citylens/core/run_folder.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from citylens.core import run_folder as layout
from citylens.explain import store
from citylens.pipeline import Variant


def _variant(run: Path, name: str, with_meta: bool = True) -> Path:
    folder = run / "analysis" / name
    (folder / "masks").mkdir(parents=True)
    if with_meta:
        (folder / "masks" / "meta.json").write_text("{}")
    return folder


def test_the_names_are_those_the_store_and_variants_use():
    assert layout.ANALYSIS_DIR == "analysis" and layout.STORE_DIR == "masks"
    assert Variant().dir("/r") == Path("/r") / layout.ANALYSIS_DIR / Variant().name


def test_variant_dirs_lists_folders_with_a_store_sorted(tmp_path: Path):
    run = tmp_path / "run"
    b = _variant(run, "b-variant")
    a = _variant(run, "a-variant")
    _variant(run, "c-unfinished", with_meta=False)  # no meta.json: the store was never completed
    (run / "analysis" / "notes.txt").write_text("a file, not a variant")
    (run / "analysis" / "d-other" / "masks" / "meta.json").mkdir(parents=True)  # meta.json is no file
    assert layout.variant_dirs(run) == [a, b]
    assert layout.variant_dirs(str(run)) == [a, b]


def test_variant_dirs_of_a_run_without_analysis(tmp_path: Path):
    assert layout.variant_dirs(tmp_path) == []
    assert layout.variant_dirs(tmp_path / "missing") == []
    (tmp_path / "analysis").write_text("not a folder")
    assert layout.variant_dirs(tmp_path) == []


def test_variant_dirs_finds_the_store_a_run_writes(tmp_path: Path, make_run, hand_masks):
    other = Variant(threshold=0.3)
    run = make_run(tmp_path / "run", "vgg11", 0, hand_masks["A"])
    make_run(run, "vgg11", 0, hand_masks["A"], variant=other)
    assert layout.variant_dirs(run) == sorted([Variant().dir(run), other.dir(run)])
    # What the layout names is where write_store put the masks of each variant.
    for variant in (Variant(), other):
        assert (variant.dir(run) / layout.STORE_DIR / "meta.json").is_file()
        opened = store.open_store(run, variant.name)
        np.testing.assert_allclose(opened.masks(0, 2).numpy(), hand_masks["A"], atol=1e-6)
