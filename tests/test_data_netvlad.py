"""Pittsburgh 250k / Tokyo 24/7 readers and PittsTokyoData on faithful fake copies of both layouts."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from citylens.data.cache import decode
from citylens.data.netvlad import PittsTokyoData, read_db_struct, read_pittsburgh, read_tokyo
from citylens.pipeline import Variant

VARIANT = f"analysis/{Variant().name}"

# NetVLAD's dbStruct field order; Tokyo Time Machine adds dbTimeStamp and qTimeStamp.
FIELDS = (
    "whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
    "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr",
)  # fmt: skip
FIELDS_TM = (
    "whichSet", "dbImageFns", "utmDb", "dbTimeStamp", "qImageFns", "utmQ", "qTimeStamp",
    "numImages", "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr",
)  # fmt: skip
PITTS_PANOS = ("000000", "000001", "000002", "001000", "001001", "001999", "010000", "010523")
# 22-char Street View ids use URL-safe base64, so '_' and '-' occur, even next to the _012_ field.
TOKYO_PANOS = (
    "_012_000_012_330-abcde", "AbCdEfGhIjKlMnOpQrStUv", "x-Y_z0123456789abcdefg", "QWERTYUIOPasdfghjklzxc",
    "0000000000000000000000", "zz__zz--zz__zz--zz__zz", "P1a2n3o4I5d6S7i8x9T0e1", "-_-_-_-_-_-_-_-_-_-_-_",
    "9zY8xW7vU6tS5rQ4pO3nM2", "lastPanoramaId_1234567",
)  # fmt: skip


def tokyo_folder(i: int) -> str:
    """0NNNN/<easting>_<northing> of the i-th fake panorama (NNNN = easting in hectometres)."""
    easting, northing = 381400.0 + 56.25 * i, 3946120.387 + 10 * i
    return f"{int(easting) // 100:05d}/{easting:.3f}_{northing:.3f}"


BROKEN = {
    "pittsburgh/000/000002_pitch2_yaw5.jpg": "zero-byte",
    "pittsburgh/001/001000_pitch1_yaw3.jpg": "not an image",
    f"tokyo/{tokyo_folder(3)}/{TOKYO_PANOS[3]}_012_090.png": "truncated",
}


@dataclass(frozen=True)
class Fake:
    pittsburgh: Path
    tokyo: Path
    pitts_names: list[str]
    tokyo_names: list[str]


def _image(path: Path, city: int, rng: np.random.Generator) -> None:
    """A small real image, 64x48 (the distributed 640x480 scaled down), tinted by city."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 200, (48, 64, 3), dtype=np.uint8)
    pixels[..., city] = 255
    Image.fromarray(pixels).save(path)


def _cell(names: list[str]) -> np.ndarray:
    """A MATLAB N x 1 cell array of strings, as NetVLAD stores file names."""
    cell = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cell[i, 0] = name
    return cell


def write_db_struct(path: Path, db: list[str], queries: list[str], time_machine: bool = False) -> None:
    """Write a dbStruct .mat in NetVLAD's field order: counts as doubles, 2xN UTM, cell arrays of names."""
    rng = np.random.default_rng(len(db))
    values = {
        "whichSet": "test",
        "dbImageFns": _cell(db),
        "utmDb": rng.uniform(5e5, 6e5, (2, len(db))),
        "dbTimeStamp": np.arange(len(db), dtype=float)[None],
        "qImageFns": _cell(queries),
        "utmQ": rng.uniform(5e5, 6e5, (2, len(queries))),
        "qTimeStamp": np.arange(len(queries), dtype=float)[None],
        "numImages": float(len(db)),
        "numQueries": float(len(queries)),
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"dbStruct": {k: values[k] for k in (FIELDS_TM if time_machine else FIELDS)}})


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Fake:
    """Both datasets as distributed (names, nesting, stray files, queries), with a few broken images."""
    base = tmp_path_factory.mktemp("netvlad")
    rng = np.random.default_rng(0)
    pitts, tokyo = base / "pitts250k", base / "tokyo247"
    pitts_names = [
        f"{pano[:3]}/{pano}_pitch{pitch}_yaw{yaw}.jpg"
        for pano in PITTS_PANOS
        for pitch in (1, 2)
        for yaw in range(1, 13)
    ]
    for name in pitts_names:
        _image(pitts / name, 0, rng)
    _image(pitts / "queries_real" / "000" / "000000_pitch1_yaw1.jpg", 0, rng)
    (pitts / "000" / "Thumbs.db").write_bytes(b"\0" * 16)
    (pitts / "README.txt").write_text("Pittsburgh 250k")
    write_db_struct(
        pitts / "datasets" / "pitts250k_train.mat", pitts_names[:24], ["000/000000_pitch1_yaw1.jpg"]
    )
    tokyo_names = []
    for i, pano in enumerate(TOKYO_PANOS):
        tokyo_names += [f"{tokyo_folder(i)}/{pano}_012_{yaw:03d}.png" for yaw in range(0, 360, 30)]
    for name in tokyo_names:
        _image(tokyo / name, 2, rng)
    (tokyo / "03814" / ".DS_Store").write_bytes(b"\0")
    for image_id, kind in BROKEN.items():
        city, rel = image_id.split("/", 1)
        path = (pitts if city == "pittsburgh" else tokyo) / rel
        broken = {"zero-byte": b"", "not an image": b"not an image", "truncated": path.read_bytes()[:60]}
        path.write_bytes(broken[kind])
    return Fake(pitts, tokyo, pitts_names, tokyo_names)


def _dm(fake: Fake, cache: Path, **kwargs: object) -> PittsTokyoData:
    roots = dict(pittsburgh_root=str(fake.pittsburgh), tokyo_root=str(fake.tokyo))
    return PittsTokyoData(**{**roots, "input_size": 32, "cache_dir": str(cache), **kwargs})


def test_readers_parse_layouts_ids_and_places(fake: Fake):
    pitts, tokyo = read_pittsburgh(fake.pittsburgh), read_tokyo(fake.tokyo)
    assert [r.image_id for r in pitts] == sorted(f"pittsburgh/{n}" for n in fake.pitts_names)
    assert [r.image_id for r in tokyo] == sorted(f"tokyo/{n}" for n in fake.tokyo_names)
    assert pitts[0].image_id == "pittsburgh/000/000000_pitch1_yaw1.jpg"
    assert pitts[0].path == fake.pittsburgh / "000" / "000000_pitch1_yaw1.jpg"
    assert {r.city for r in pitts} == {"pittsburgh"} and {r.city for r in tokyo} == {"tokyo"}
    assert not any("queries_real" in r.image_id for r in pitts)
    for records, panos, views in ((pitts, PITTS_PANOS, 24), (tokyo, TOKYO_PANOS, 12)):
        assert sorted({r.place for r in records}) == sorted(panos)
        assert all(sum(r.place == p for r in records) == views for p in panos)
        assert all(Path(r.image_id).name.startswith(r.place + "_") for r in records)
    ids = [r.image_id for r in pitts + tokyo]
    assert len(set(ids)) == len(ids)
    assert read_pittsburgh(fake.pittsburgh) == pitts and read_tokyo(str(fake.tokyo)) == tokyo


def test_db_struct_keeps_netvlad_fields(tmp_path: Path):
    names = ["000/000000_pitch1_yaw1.jpg", "000/000000_pitch1_yaw2.jpg", "000/000000_pitch2_yaw12.jpg"]
    write_db_struct(tmp_path / "pitts30k_val.mat", names, ["000/000000_pitch1_yaw1.jpg"])
    write_db_struct(tmp_path / "tokyoTM_val.mat", names[:2], ["q.jpg", "r.jpg"], time_machine=True)
    raw = scipy.io.loadmat(tmp_path / "pitts30k_val.mat")["dbStruct"]
    assert raw.dtype.names == FIELDS and len(raw.item()) == 10
    assert raw.item()[5].dtype == np.float64 and raw.item()[1].shape == (3, 1)
    assert scipy.io.loadmat(tmp_path / "tokyoTM_val.mat")["dbStruct"].dtype.names == FIELDS_TM
    pitts = read_db_struct(tmp_path / "pitts30k_val.mat")
    assert pitts.which_set == "test" and pitts.db_image_fns == names
    assert pitts.num_images == 3 and isinstance(pitts.num_images, int) and pitts.num_queries == 1
    assert pitts.utm_db.shape == (2, 3) and pitts.pos_dist_sq_thr == 625.0 and pitts.db_time_stamp is None
    tm = read_db_struct(tmp_path / "tokyoTM_val.mat")
    assert tm.db_image_fns == names[:2] and tm.q_image_fns == ["q.jpg", "r.jpg"] and tm.num_queries == 2
    assert tm.db_time_stamp is not None and list(tm.db_time_stamp) == [0.0, 1.0]
    assert tm.non_triv_pos_dist_sq_thr == 100.0


def test_mat_files_select_database_images(fake: Fake, tmp_path: Path):
    chosen = [n for n in fake.pitts_names if n.startswith(("000/000001_", "001/001001_"))]
    write_db_struct(tmp_path / "pitts30k_test.mat", chosen, [])
    selected = read_pittsburgh(fake.pittsburgh, tmp_path / "pitts30k_test.mat")
    assert [r.image_id for r in selected] == sorted(f"pittsburgh/{n}" for n in chosen)
    # Several .mat files, one of them given relative to the dataset root.
    mats = [str(tmp_path / "pitts30k_test.mat"), "datasets/pitts250k_train.mat"]
    both = read_pittsburgh(fake.pittsburgh, mats)
    assert {r.place for r in both} == {"000000", "000001", "001001"} and len(both) == 72
    as_jpg = [n.replace(".png", ".jpg") for n in fake.tokyo_names]
    write_db_struct(tmp_path / "tokyo247.mat", as_jpg, ["247query_v3/q.jpg"])
    write_db_struct(tmp_path / "tokyoTM_val.mat", as_jpg[:12], ["q.jpg"], time_machine=True)
    tokyo = read_tokyo(fake.tokyo, str(tmp_path / "tokyo247.mat"))
    assert tokyo == read_tokyo(fake.tokyo)
    assert all(r.image_id.endswith(".png") and r.path.is_file() for r in tokyo)
    tm = read_tokyo(fake.tokyo, tmp_path / "tokyoTM_val.mat")
    assert len(tm) == 12 and {r.place for r in tm} == {TOKYO_PANOS[0]}


def test_mat_naming_absent_files_is_reported_with_counts(fake: Fake, tmp_path: Path, caplog):
    present = fake.pitts_names[:24]
    absent = [f"002/002000_pitch1_yaw{y}.jpg" for y in range(1, 6)]
    mat = tmp_path / "pitts250k_test.mat"
    write_db_struct(mat, present + absent, [])
    with caplog.at_level(logging.WARNING, logger="citylens.data"):
        records = read_pittsburgh(fake.pittsburgh, mat)
    assert len(records) == 24
    assert f"5 of 29 images listed in {mat} are missing" in caplog.text
    write_db_struct(tmp_path / "gone.mat", absent[:3], [])
    with pytest.raises(
        FileNotFoundError, match=r"data\.pittsburgh_mat: none of the 3 images listed in .*gone"
    ):
        read_pittsburgh(fake.pittsburgh, tmp_path / "gone.mat")


def test_bad_roots_and_mats_name_key_path_and_layout(fake: Fake, tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"data\.pittsburgh_root: {missing} .*NNN/PPPPPP_pitch"):
        read_pittsburgh(missing)
    with pytest.raises(FileNotFoundError, match=rf"data\.tokyo_root: {missing} .*<easting>_<northing>"):
        _dm(fake, tmp_path, tokyo_root=str(missing)).find_records()
    odd = tmp_path / "odd"
    (odd / "images").mkdir(parents=True)
    (odd / "images" / "a.jpg").write_bytes(b"x")
    with pytest.raises(
        ValueError, match=rf"data\.pittsburgh_root: no pittsburgh images .*{odd} .*images.*_yaw"
    ):
        read_pittsburgh(odd)
    with pytest.raises(ValueError, match=rf"data\.tokyo_root: .*{fake.pittsburgh}.*_012_"):
        read_tokyo(fake.pittsburgh)
    with pytest.raises(FileNotFoundError, match=r"data\.tokyo_mat: .*tokyo247\.mat is not a file"):
        read_tokyo(fake.tokyo, tmp_path / "tokyo247.mat")
    with pytest.raises(ValueError, match=r"data\.tokyo_mat: 24 of 24 names in .*pitts250k_train.mat do not"):
        read_tokyo(fake.tokyo, fake.pittsburgh / "datasets" / "pitts250k_train.mat")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match="not a MATLAB v5 .mat"):
        read_pittsburgh(fake.pittsburgh, tmp_path / "junk.mat")


def test_data_module_splits_by_place_balances_and_skips_broken_files(fake: Fake, tmp_path: Path):
    dm = _dm(fake, tmp_path / "cache", balance=False)
    dm.setup()
    assert dm.cities == ["pittsburgh", "tokyo"]
    assert set(dm.failures) == set(BROKEN)
    assert dm.failures["pittsburgh/000/000002_pitch2_yaw5.jpg"] == "zero-byte file"
    counts = {c: sum(r.city == c for s in dm.splits.values() for r in s) for c in dm.cities}
    assert counts == {"pittsburgh": 190, "tokyo": 119}
    places = {name: {r.place for r in split} for name, split in dm.splits.items()}
    assert not places["train"] & places["test"] and not places["train"] & places["val"]
    assert not places["val"] & places["test"]
    assert all({r.city for r in split} == set(dm.cities) for split in dm.splits.values())
    dm.write_split(tmp_path)
    assert "QWERTYUIOPasdfghjklzxc_012_090.png" in (tmp_path / "skipped_images.csv").read_text()

    balanced = _dm(fake, tmp_path / "cache", balance=True)
    balanced.setup()
    counts = {c: sum(r.city == c for s in balanced.splits.values() for r in s) for c in balanced.cities}
    assert counts["pittsburgh"] == counts["tokyo"] <= 119
    capped = _dm(fake, tmp_path / "cache", images_per_city=30)
    assert len(capped.find_records()) == 60
    assert capped.describe() == {
        "kind": "pitts_tokyo",
        "pittsburgh_root": str(fake.pittsburgh),
        "tokyo_root": str(fake.tokyo),
        "pittsburgh_mat": [],
        "tokyo_mat": [],
        "images_per_city": 30,
    }


def test_view_cache_is_reused_by_a_second_data_module(fake: Fake, tmp_path: Path):
    first = _dm(fake, tmp_path, images_per_city=20)
    first.setup()
    data = first.cache.directory / "data.npy"
    stamp, views = data.stat().st_mtime_ns, np.array(first.cache.images())
    second = _dm(fake, tmp_path, images_per_city=20)
    second.setup()
    assert second.cache.directory == first.cache.directory and data.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.array(second.cache.images()), views)
    assert second.splits == first.splits


def test_config_mirrors_the_class_and_takes_mat_lists(compose_cfg, fake: Fake, tmp_path: Path):
    from hydra.utils import instantiate

    from citylens.app.config import ConfigError, validate

    mats = f"[{fake.pittsburgh}/datasets/pitts250k_train.mat,datasets/pitts250k_train.mat]"
    roots = [f"data.pittsburgh_root={fake.pittsburgh}", f"data.tokyo_root={fake.tokyo}"]
    cfg = compose_cfg(["data=pitts_tokyo", *roots, f"data.pittsburgh_mat={mats}"], tmp_path, tmp_path)
    assert cfg.data.split_by == "place" and cfg.data.balance is True and cfg.data.images_per_city is None
    dm = instantiate(cfg.data)
    assert isinstance(dm, PittsTokyoData) and dm.cache_dir == tmp_path
    assert len(read_pittsburgh(dm.pittsburgh_root, dm.pittsburgh_mat)) == 24
    assert len(dm.describe()["pittsburgh_mat"]) == 2
    with pytest.raises(ConfigError, match="data.tokyo_root"):
        validate(compose_cfg(["data=pitts_tokyo", roots[0]], tmp_path, tmp_path))


def test_smoke_training_run_end_to_end(compose_cfg, fake: Fake, tmp_path: Path, cache_dir: Path):
    from citylens.app.train import train

    run_dir = tmp_path / "run"
    overrides = [
        "experiment=smoke",
        "data=pitts_tokyo",
        f"data.pittsburgh_root={fake.pittsburgh}",
        f"data.tokyo_root={fake.tokyo}",
        "logger=csv",
        "model=simple",
        "analysis.steps.explain.thumbnails=20",
    ]
    cfg = compose_cfg(overrides, run_dir, cache_dir)
    assert cfg.data._target_ == "citylens.data.netvlad.PittsTokyoData" and cfg.data.split_by == "place"
    train(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["cities"] == ["pittsburgh", "tokyo"] and 0 <= metrics["test/acc"] <= 1
    place = {r.image_id: r.place for r in read_pittsburgh(fake.pittsburgh) + read_tokyo(fake.tokyo)}
    with open(run_dir / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sides = {name: {place[r["image_id"]] for r in rows if r["split"] == name} for name in ("train", "test")}
    assert sides["test"] and sides["train"] and not sides["train"] & sides["test"]
    # The analysis ran: masks, t-SNE and figures; object ratios are skipped (no label maps, ground-truth
    # segmenter) with a warning rather than failing the run.
    out = run_dir / VARIANT
    assert (out / "masks" / "meta.json").is_file() and (out / "tsne.csv").is_file()
    assert (out / "figures" / "fig6_examples.png").is_file()
    assert not (out / "object_ratios.csv").exists()


def test_real_tokyo_image_reads_from_the_layout(real_photos, tmp_path: Path):
    real = real_photos / "tokyo247" / "patchnetvlad_tokyo_db.png"
    target = tmp_path / "03814" / "381426.780_3946120.387" / "AbCdEfGhIjKlMnOpQrStUv_012_000.png"
    target.parent.mkdir(parents=True)
    shutil.copyfile(real, target)
    (record,) = read_tokyo(tmp_path)
    assert record.image_id == "tokyo/03814/381426.780_3946120.387/AbCdEfGhIjKlMnOpQrStUv_012_000.png"
    assert record.place == "AbCdEfGhIjKlMnOpQrStUv"
    view, reason = decode(record.path, 48)
    assert reason is None and view is not None and view.shape == (48, 48, 3) and view.std() > 10
