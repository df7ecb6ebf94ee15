"""The sweep explorer: one HTML page per sweep (report/explorer.html) to browse every test image of every run.

Views: Map (t-SNE of one run's masks), Image (one image, every run's mask overlay and explanation, per-image
AR, and for a run with concepts its concept maps, one at a time, over the image), Objects (object-ratio bars
per city at a chosen threshold) and Pairs (Table 2 as a heatmap). The page
works from the disk with no network: plotly.js and the data are inline, the thumbnails are JPEG atlases
(THUMBS_PER_ATLAS small images each) beside it in report/explorer/, read with <img>-style CSS backgrounds,
which browsers allow for file:// pages (unlike fetch). See docs/explorer.md.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.colors import to_hex
from PIL import Image

from citylens.analysis.residuals import PairwiseResiduals
from citylens.core.io import atomic_path, atomic_write_text, read_json
from citylens.explain.explanation import explain, overlay
from citylens.explain.store import MaskStore
from citylens.figures import CITY_COLOURS
from citylens.pipeline.runs import Run, planted_objects
from citylens.report.examples import ViewReader
from citylens.report.sweep_figures import run_colours

EXPLORER_FILE = "explorer.html"
ASSET_DIR = "explorer"
THUMB_SIDE = 96
ATLAS_COLS = 10
THUMBS_PER_ATLAS = ATLAS_COLS * ATLAS_COLS
CAUSAL_TOP = 3
JPEG_QUALITY = 80
CITY_HEX = [to_hex(c) for c in CITY_COLOURS]
# Concept maps are embedded at most CONCEPT_GRID x CONCEPT_GRID per image and concept, one byte a cell.
CONCEPT_GRID = 8


def _numbers(values: Any, digits: int = 4) -> list[float | None]:
    """A JSON-safe list: floats rounded to `digits`, NaN/inf as null (JSON has no NaN)."""
    array = np.asarray(values, dtype=np.float64)
    rounded = np.round(array, digits)
    return [float(v) if np.isfinite(v) else None for v in rounded.tolist()]


def shrink(views: np.ndarray, side: int) -> np.ndarray:
    """uint8 (n, S, S, 3) views -> uint8 (n, side, side, 3) by area averaging."""
    tensor = torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2).float()
    small = F.interpolate(tensor, size=(side, side), mode="area")
    return small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def thumbnails(
    masks: np.ndarray, views: np.ndarray | None, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(overlay, explanation) uint8 thumbnails of one run's masks (n, s, s) over the views (n, s, s, 3).

    Without views (the data is gone) the overlay is the colour-mapped mask and the explanation the explained
    pixels in white, so the page still shows where each run looks.
    """
    if views is None:
        coloured = (colormaps["jet"](np.clip(masks, 0, 1))[..., :3] * 255).round().astype(np.uint8)
        white = np.full(masks.shape + (3,), 255, np.uint8)
        return coloured, explain(white, masks, threshold)
    return overlay(views, masks), explain(views, masks, threshold)


def store_thumbnails(
    store: MaskStore, start: int, stop: int, small_views: np.ndarray | None, threshold: float, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """(overlay, explanation) thumbnails of images start:stop of a store; masks read at `side` px directly."""
    return thumbnails(store.masks(start, stop, size=side).numpy(), small_views, threshold)


def thumbnail_chunks(
    store: MaskStore,
    read_views: Callable[[np.ndarray], np.ndarray] | None,
    threshold: float,
    side: int = THUMB_SIDE,
    chunk: int = 256,
) -> Iterator[dict[str, np.ndarray]]:
    """{"overlay", "explanation"} thumbnails of every image of a store, `chunk` images at a time, in order.

    `read_views(indices)` gives the uint8 analysis views of those store rows (None: masks alone). This is what
    the runs' W&B per-image table shows (analysis.steps.explain).
    """
    for start in range(0, len(store), chunk):
        stop = min(len(store), start + chunk)
        small = shrink(read_views(np.arange(start, stop)), side) if read_views is not None else None
        overlays, explanations = store_thumbnails(store, start, stop, small, threshold, side)
        yield {"overlay": overlays, "explanation": explanations}


def atlas(thumbs: np.ndarray, cols: int = ATLAS_COLS) -> np.ndarray:
    """Tile up to cols x cols thumbnails (n, s, s, 3) row by row into one image (rows*s, cols*s, 3)."""
    n, s = len(thumbs), thumbs.shape[1]
    rows = -(-n // cols)
    grid = np.zeros((rows * cols, s, s, 3), np.uint8)
    grid[:n] = thumbs
    return grid.reshape(rows, cols, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(rows * s, cols * s, 3)


def write_jpeg(pixels: np.ndarray, path: Path, quality: int = JPEG_QUALITY) -> None:
    """Write a uint8 RGB array as a JPEG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _chunks(n: int, per: int = THUMBS_PER_ATLAS) -> Iterator[tuple[int, int, int]]:
    """(atlas number, start, stop) over n images, one atlas per `per` images."""
    for k, start in enumerate(range(0, n, per)):
        yield k, start, min(n, start + per)


def write_thumbnails(
    runs: Sequence[Run],
    out_dir: Path,
    threshold: float,
    views: ViewReader | None = None,
    side: int = THUMB_SIDE,
    asset_dir: str = ASSET_DIR,
) -> dict[str, Any]:
    """Write the image atlases and every run's overlay/explanation atlases under out_dir/asset_dir.

    Returns their file names relative to out_dir: image (None without views), overlay[r], explanation[r].
    The views are read once per atlas and shared by every run (all runs cover the same test images).
    """
    ids = runs[0].store.image_ids
    names: dict[str, Any] = {
        "image": [] if views is not None else None,
        "overlay": [[] for _ in runs],
        "explanation": [[] for _ in runs],
    }
    for k, start, stop in _chunks(len(ids)):
        small = shrink(views(ids[start:stop]), side) if views is not None else None
        if small is not None:
            name = f"{asset_dir}/image_{k:04d}.jpg"
            write_jpeg(atlas(small), out_dir / name)
            names["image"].append(name)
        for r, run in enumerate(runs):
            made = store_thumbnails(run.store, start, stop, small, threshold, side)
            for kind, thumbs in zip(("overlay", "explanation"), made):
                name = f"{asset_dir}/r{r}_{kind}_{k:04d}.jpg"
                write_jpeg(atlas(thumbs), out_dir / name)
                names[kind][r].append(name)
    return names


def _tsne(run: Run) -> dict[str, list | None]:
    """The run's t-SNE coordinates in store order (null where the image is missing from tsne.csv)."""
    tsne = run.table("tsne.csv")
    if tsne is None:
        return {"x": None, "y": None}
    coords = tsne.set_index("image_id")[["x", "y"]].reindex(run.store.image_ids)
    return {"x": _numbers(coords["x"], 3), "y": _numbers(coords["y"], 3)}


def _ratios(run: Run) -> dict[str, list] | None:
    """The kept rows of object_ratios.csv as columns (ci_low/ci_high where the table has intervals)."""
    table = run.table("object_ratios.csv")
    if table is None:
        return None
    kept = table[table["kept"].astype(bool)]
    out = {
        "threshold": _numbers(kept["threshold"]),
        "city": kept["city"].astype(str).tolist(),
        "object": kept["object"].astype(str).tolist(),
        "ratio": _numbers(kept["ratio"]),
    }
    if {"ci_low", "ci_high"} <= set(kept.columns):
        out.update(ci_low=_numbers(kept["ci_low"]), ci_high=_numbers(kept["ci_high"]))
    return out


def causal_top(table: pd.DataFrame | None, k: int = CAUSAL_TOP) -> dict[str, list[str]]:
    """Each city's k objects with the largest causal effect (causal.csv: city, object, effect, ...)."""
    if table is None or table.empty:
        return {}
    ranked = table.sort_values(["city", "effect", "object"], ascending=[True, False, True])
    return {str(city): rows["object"].astype(str).head(k).tolist() for city, rows in ranked.groupby("city")}


def concept_data(run: Run, image_ids: Sequence[str], grid: int = CONCEPT_GRID) -> dict[str, Any] | None:
    """A run's concepts for the Image view; None without a concept store (concepts/meta.json, maps.npy).

    maps: base64 of uint8 (N, k, g, g), N the page's images in `image_ids` order (zeros where the run did not
    map an image), the stored coefficients area-averaged to g = min(grid, their grid) and divided by each
    concept's largest value over all images (255 = the concept's strongest cell anywhere), so a weak map
    looks weak; the page upsamples them bilinearly. importance: per image and concept the drop of log P(true
    city) without it (importance.npy; null where unmapped). names: each concept's object in concepts.csv
    (null: matches no object). city_importance: per city the k importances of concepts.csv.
    """
    folder = run.path / "concepts"
    meta = read_json(folder / "meta.json")
    if not isinstance(meta, dict) or not (folder / "maps.npy").is_file():
        return None
    maps = torch.from_numpy(np.load(folder / "maps.npy", allow_pickle=False).astype(np.float32))
    k, side = maps.shape[1], min(grid, maps.shape[2], maps.shape[3])
    small = F.adaptive_avg_pool2d(maps, side) if len(maps) else maps.new_zeros((0, k, side, side))
    peak = small.amax(dim=(0, 2, 3), keepdim=True) if len(small) else torch.ones(1, k, 1, 1)
    scaled = (small / peak.clamp_min(1e-12) * 255).round().clamp(0, 255).byte().numpy()
    imp_path = folder / "importance.npy"
    stored = np.load(imp_path, allow_pickle=False) if imp_path.is_file() else np.full((len(maps), k), np.nan)
    row = {image: i for i, image in enumerate(meta.get("image_ids", []))}
    picked = np.array([row.get(image, -1) for image in image_ids])
    found = picked >= 0
    out = np.zeros((len(image_ids), k, side, side), np.uint8)
    out[found] = scaled[picked[found]]
    importance = np.full((len(image_ids), k), np.nan)
    importance[found] = stored[picked[found]]
    table = run.table("concepts.csv")
    names: list[str | None] = [None] * k
    by_city: dict[str, list[float | None]] = {}
    if table is not None:
        for c, obj in zip(table["concept"], table["object"]):
            names[int(c)] = obj if isinstance(obj, str) and obj else None
        for city, rows in table.groupby("city", sort=False):
            values = rows.set_index("concept")["importance"].reindex(range(k))
            by_city[str(city)] = _numbers(values, 3)
    return {
        "k": int(k),
        "grid": int(side),
        "layer": str(meta.get("layer", "")),
        "maps": base64.b64encode(out.tobytes()).decode("ascii"),
        "importance": [_numbers(v, 3) for v in importance],
        "names": names,
        "city_importance": by_city,
    }


def _pairs(runs: Sequence[Run], pairs: PairwiseResiduals | None, per_pair: pd.DataFrame) -> list[dict]:
    """Every pair of runs: indices, per-image AR, and Table 2's AR with its interval."""
    if pairs is None:
        return []
    index = {r.name: i for i, r in enumerate(runs)}
    table = per_pair.set_index(["run_a", "run_b"]) if len(per_pair) else None
    out = []
    for (a, b), values in pairs.per_image().items():
        row = table.loc[(a, b)] if table is not None and (a, b) in table.index else None
        out.append(
            {
                "a": index[a],
                "b": index[b],
                "per_image": _numbers(values),
                "ar": _numbers([row["ar"] if row is not None else values.mean()])[0],
                "ci_low": _numbers([row["ci_low"]])[0] if row is not None else None,
                "ci_high": _numbers([row["ci_high"]])[0] if row is not None else None,
                "group": str(row["group"]) if row is not None else "",
            }
        )
    return out


def explorer_data(
    runs: Sequence[Run],
    pairs: PairwiseResiduals | None,
    per_pair: pd.DataFrame,
    threshold: float,
    thumbs: dict[str, Any],
    side: int = THUMB_SIDE,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready values; images are referenced by atlas file names."""
    first = runs[0].store
    cities = runs[0].city_names
    city_of = {c: i for i, c in enumerate(cities)}
    ratio_runs = [_ratios(r) for r in runs]
    thresholds = sorted({t for rr in ratio_runs if rr for t in rr["threshold"]})
    return {
        "cities": cities,
        "city_colours": [CITY_HEX[i % len(CITY_HEX)] for i in range(len(cities))],
        "image_ids": list(first.image_ids),
        "city": [city_of.get(c, -1) for c in first.cities],
        "threshold": threshold,
        "runs": [
            {
                "name": r.name,
                "label": r.label,
                "arch": r.arch,
                "seed": r.seed,
                "colour": to_hex(colour),
                "acc": _numbers([r.metrics.get("test/acc", float("nan"))])[0],
                "pred": r.store.preds.astype(int).tolist(),
                "prob": _numbers(r.store.probs.max(axis=1), 3),
                **_tsne(r),
                "ratios": ratios,
                "causal": causal_top(r.table("causal.csv")),
                "concepts": concept_data(r, first.image_ids),
            }
            for r, colour, ratios in zip(runs, run_colours([r.arch for r in runs]), ratio_runs)
        ],
        "thresholds": thresholds,
        "planted": planted_objects(runs),
        "pairs": _pairs(runs, pairs, per_pair),
        "thumbs": {**thumbs, "side": side, "cols": ATLAS_COLS, "per_atlas": THUMBS_PER_ATLAS},
    }


def _script_json(data: dict[str, Any]) -> str:
    """JSON safe to inline in a <script> element (no '</' that would end it)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def render_page(data: dict[str, Any], title: str) -> str:
    """The explorer's HTML: plotly.js, the page's script and its data inline, so it opens from the disk."""
    from plotly.offline import get_plotlyjs

    static = resources.files("citylens.report") / "explorer_static"
    page = (static / "explorer.html").read_text()
    return (
        page.replace("{{title}}", title)
        .replace("{{style}}", (static / "explorer.css").read_text())
        .replace("{{plotly}}", get_plotlyjs())
        .replace("{{data}}", _script_json(data))
        .replace("{{script}}", (static / "explorer.js").read_text())
    )


def build_explorer(
    runs: Sequence[Run],
    out_dir: Path | str,
    pairs: PairwiseResiduals | None,
    per_pair: pd.DataFrame,
    threshold: float,
    views: ViewReader | None = None,
    title: str = "citylens sweep explorer",
    side: int = THUMB_SIDE,
    name: str = "explorer",
) -> Path:
    """Write out_dir/<name>.html and its thumbnail atlases out_dir/<name>/ for the given runs.

    `runs` must cover the same test images (report.runs.comparable); `pairs` holds their per-image residuals
    (None with one run), `per_pair` Table 2's rows; `views` reads the analysis views by image id (None: the
    thumbnails show the masks alone); `name` tells pages of several groups of runs apart. Returns the page's
    path.
    """
    if not runs:
        raise ValueError("the explorer needs at least one finished run")
    out_dir = Path(out_dir)
    thumbs = write_thumbnails(runs, out_dir, threshold, views, side, asset_dir=name)
    data = explorer_data(runs, pairs, per_pair, threshold, thumbs, side)
    path = out_dir / f"{name}.html"
    atomic_write_text(path, render_page(data, title))
    return path
