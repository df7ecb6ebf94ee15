"""The sweep explorer: its data from hand-made runs, and the page itself opened in headless Chromium.

The browser test is skipped only off CI when Chromium or its driver is missing; in CI (env CI set) a missing
browser fails it. `.ci/run` installs Debian's chromium and chromium-driver first.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from citylens.pipeline.runs import scan_sweep, stream_residuals
from citylens.report.explorer import (
    ASSET_DIR,
    EXPLORER_FILE,
    THUMB_SIDE,
    atlas,
    build_explorer,
    causal_top,
    explorer_data,
)
from citylens.report.sweep import Options, build_report

FAST = Options(n_boot=50, n_perm=100, examples_per_city=1)
N_PER_CITY = 7
PLANTED = {"pittsburgh": ["skyscraper"], "tokyo": ["signboard"]}
OBJECTS = ["building", "road", "sky", "skyscraper", "signboard", "tree"]


def _ratios(rng: np.random.Generator) -> pd.DataFrame:
    """object_ratios.csv at thresholds 0.3 and 0.5 (R falls with the threshold, as it must)."""
    rows = []
    for city in ("pittsburgh", "tokyo"):
        for k, obj in enumerate(OBJECTS):
            base = float(rng.uniform(0.4, 0.9))
            for threshold, factor in ((0.3, 1.0), (0.5, 0.5)):
                rows.append(
                    {
                        "threshold": threshold,
                        "city": city,
                        "object": obj,
                        "object_id": k,
                        "ratio": base * factor,
                        "explained_pixels": 10,
                        "total_pixels": 20,
                        "mean_pixels": 200.0,
                        "kept": True,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def explorer_sweep(tmp_path: Path, default_variant, make_run, make_sweep) -> SimpleNamespace:
    """Three hand-made runs over 14 test images: stores, tsne.csv, object_ratios.csv, one causal.csv."""
    sweep = make_sweep(tmp_path)
    ids = [f"{c}/{c[0]}{i}" for c in ("pittsburgh", "tokyo") for i in range(N_PER_CITY)]
    targets = np.array([0] * N_PER_CITY + [1] * N_PER_CITY)
    rng = np.random.default_rng(0)
    for k, (arch, seed) in enumerate((("simple", 0), ("simple", 1), ("simpler", 0))):
        run = make_run(
            sweep / f"{k}_{arch}-s{seed}",
            arch,
            seed,
            rng.random((len(ids), 4, 4)).astype(np.float32),
            ids=ids,
            size=32,
            dataset={"kind": "hand-made", "planted": PLANTED},
        )
        preds = targets.copy()
        preds[k] = 1  # image k (a pittsburgh image) is misclassified by run k
        probs = np.eye(2, dtype=np.float32)[preds] * 0.6 + 0.2
        out = default_variant.dir(run)
        np.save(out / "masks" / "probs.npy", probs)
        pd.DataFrame(
            {
                "image_id": ids,
                "city": [i.split("/")[0] for i in ids],
                "predicted": ["pittsburgh" if p == 0 else "tokyo" for p in preds],
                "x": rng.normal(size=len(ids)) + 5 * targets,
                "y": rng.normal(size=len(ids)),
            }
        ).to_csv(out / "tsne.csv", index=False)
        ratios = _ratios(rng)
        if k == 0:  # one run's table carries intervals, as the page draws them where they exist
            ratios = ratios.assign(ci_low=ratios["ratio"] - 0.05, ci_high=ratios["ratio"] + 0.05)
        ratios.to_csv(out / "object_ratios.csv", index=False)
    pd.DataFrame(
        {
            "city": ["tokyo", "tokyo", "tokyo", "tokyo", "pittsburgh"],
            "object": ["signboard", "road", "tree", "sky", "skyscraper"],
            "n_images": [5] * 5,
            "effect": [0.2, 0.1, -0.01, 0.05, 0.15],
            "ci_low": [0.1] * 5,
            "ci_high": [0.3] * 5,
            "flip_rate": [0.1] * 5,
            "method": ["counterfactual"] * 5,
        }
    ).to_csv(sweep / "0_simple-s0" / "causal.csv", index=False)
    write_concepts(sweep / "0_simple-s0", ids)
    return SimpleNamespace(dir=sweep, ids=ids, targets=targets)


def write_concepts(run_dir: Path, ids: list[str]) -> None:
    """A concept store of 3 concepts on a 16x16 grid, its images in reverse order: in stored image m concept 0
    is m + 1 on the top-left quarter, concept 1 is 1 on the bottom-right quarter, concept 2 is nowhere."""
    stored = ids[::-1]
    maps = np.zeros((len(ids), 3, 16, 16), np.float32)
    for m in range(len(ids)):
        maps[m, 0, :8, :8] = m + 1
    maps[:, 1, 8:, 8:] = 1
    (run_dir / "concepts").mkdir()
    np.save(run_dir / "concepts" / "maps.npy", maps)
    importance = np.stack([np.arange(len(ids)) * 0.01, np.full(len(ids), 0.5), np.zeros(len(ids))], 1)
    np.save(run_dir / "concepts" / "importance.npy", importance.astype(np.float32))
    meta = {"layer": "features.7", "k": 3, "image_ids": stored}
    (run_dir / "concepts" / "meta.json").write_text(json.dumps(meta))
    pd.DataFrame(
        {
            "city": ["tokyo"] * 3 + ["pittsburgh"] * 3,
            "concept": [1, 0, 2, 0, 1, 2],
            "importance": [0.4, 0.2, 0.0, 0.3, 0.1, 0.0],
            "object": ["signboard", "road", None, "road", "signboard", None],
            "causal_rank": [1.0, 2.0, None, None, None, None],
        }
    ).to_csv(run_dir / "concepts.csv", index=False)


def fake_views(image_ids: list[str]) -> np.ndarray:
    """32 px views, one flat colour per image (its index), so an atlas cell can be told apart."""
    out = np.zeros((len(image_ids), 32, 32, 3), np.uint8)
    for k, image_id in enumerate(image_ids):
        out[k] = (int(re.sub(r"\D", "", image_id)) * 30 + 20) % 256
    return out


def test_atlas_places_thumbnails_row_by_row():
    thumbs = np.stack([np.full((2, 2, 3), v, np.uint8) for v in range(5)])
    grid = atlas(thumbs, cols=2)
    assert grid.shape == (6, 4, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 2, 0] == 1 and grid[2, 0, 0] == 2 and grid[4, 0, 0] == 4
    assert grid[4, 2, 0] == 0  # the empty cell after the last thumbnail


def test_causal_top_ranks_by_effect_per_city():
    table = pd.DataFrame(
        {"city": ["a", "a", "a", "b"], "object": ["x", "y", "z", "w"], "effect": [0.1, 0.3, -0.2, 0.0]}
    )
    assert causal_top(table, k=2) == {"a": ["y", "x"], "b": ["w"]}
    assert causal_top(None) == {}


def test_explorer_data_and_thumbnails_from_hand_made_runs(explorer_sweep, tmp_path: Path):
    made = explorer_sweep
    runs, _ = scan_sweep(made.dir)
    pairs = stream_residuals([r.store for r in runs], [r.name for r in runs])
    out = tmp_path / "report"
    page = build_explorer(runs, out, pairs, pd.DataFrame(), 0.5, views=fake_views)
    html = page.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html), "every script and style is inline"
    data = json.loads(
        re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', html, re.S)
        .group(1)
        .replace("<\\/", "</")
    )
    assert data["image_ids"] == made.ids and data["city"] == made.targets.tolist()
    assert [r["label"] for r in data["runs"]] == ["simple-s0", "simple-s1", "simpler-s0"]
    assert [r["pred"][k] for k, r in enumerate(data["runs"])] == [1, 1, 1]
    assert data["runs"][1]["prob"][0] == pytest.approx(0.8)
    assert data["thresholds"] == [0.3, 0.5] and data["planted"] == PLANTED
    assert data["runs"][0]["causal"] == {"pittsburgh": ["skyscraper"], "tokyo": ["signboard", "road", "sky"]}
    assert data["runs"][1]["causal"] == {}
    per_image = pairs.per_image()
    (first,) = [p for p in data["pairs"] if (p["a"], p["b"]) == (0, 2)]
    expected = per_image[(runs[0].name, runs[2].name)]
    assert first["per_image"] == pytest.approx(expected.tolist(), abs=1e-4)
    assert first["ar"] == pytest.approx(expected.mean(), abs=1e-4)
    # The image atlas holds image i's view in cell i, shrunk to THUMB_SIDE.
    views = np.asarray(Image.open(out / data["thumbs"]["image"][0]))
    assert views.shape == (2 * THUMB_SIDE, 10 * THUMB_SIDE, 3)
    cell = views[THUMB_SIDE + 10 : 2 * THUMB_SIDE - 10, 3 * THUMB_SIDE + 10 : 4 * THUMB_SIDE - 10]
    assert abs(float(cell.mean()) - fake_views([made.ids[13]])[0].mean()) < 3
    # An explanation keeps only pixels whose mask is >= 0.5: the rest of the thumbnail is black.
    explained = np.asarray(Image.open(out / data["thumbs"]["explanation"][0][0])).astype(float)
    masks = runs[0].store.masks(0, 1, size=THUMB_SIDE).numpy()[0]
    tile = explained[:THUMB_SIDE, :THUMB_SIDE].mean(axis=2)
    assert tile[masks < 0.4].mean() < 5 and tile[masks > 0.6].mean() == pytest.approx(20, abs=3)
    assert len(list((out / ASSET_DIR).glob("*.jpg"))) == 1 + 2 * len(runs)
    # Concepts: run 0's maps in the page's image order, pooled 16 -> 8, scaled by each concept's peak.
    concepts = data["runs"][0]["concepts"]
    assert data["runs"][1]["concepts"] is None
    assert (concepts["k"], concepts["grid"], concepts["layer"]) == (3, 8, "features.7")
    assert concepts["names"] == ["road", "signboard", None]
    assert concepts["city_importance"]["tokyo"] == [0.2, 0.4, 0.0]
    maps = np.frombuffer(base64.b64decode(concepts["maps"]), np.uint8).reshape(len(made.ids), 3, 8, 8)
    n = len(made.ids)
    for i in (0, 5, n - 1):  # page image i is stored image n - 1 - i: concept 0 is n - i there, peak n
        assert (maps[i, 0, :4, :4] == round(255 * (n - i) / n)).all() and (maps[i, 0, 4:, :] == 0).all()
        assert concepts["importance"][i] == pytest.approx([0.01 * (n - 1 - i), 0.5, 0.0], abs=1e-3)
    assert (maps[:, 1, 4:, 4:] == 255).all() and (maps[:, 1, :4, :] == 0).all() and not maps[:, 2].any()


def test_explorer_without_views_or_pairs_shows_masks_alone(explorer_sweep, tmp_path: Path):
    made = explorer_sweep
    runs, _ = scan_sweep(made.dir)
    data = explorer_data(runs[:1], None, pd.DataFrame(), 0.5, {"image": None})
    assert data["pairs"] == [] and data["thumbs"]["image"] is None
    page = build_explorer(runs[:1], tmp_path / "one", None, pd.DataFrame(), 0.5)
    assert page.is_file() and not list((tmp_path / "one" / ASSET_DIR).glob("image_*"))
    other = build_explorer(runs[:1], tmp_path / "one", None, pd.DataFrame(), 0.5, name="explorer_group2")
    assert other.name == "explorer_group2.html" and "explorer_group2/r0_overlay_0000.jpg" in other.read_text()
    assert (tmp_path / "one" / "explorer_group2" / "r0_overlay_0000.jpg").is_file()
    with pytest.raises(ValueError, match="at least one finished run"):
        build_explorer([], tmp_path / "none", None, pd.DataFrame(), 0.5)


def test_sweep_report_writes_the_explorer_and_links_it(explorer_sweep, tmp_path: Path):
    made = explorer_sweep
    out = build_report(made.dir, FAST)
    assert (out / EXPLORER_FILE).stat().st_size > 1_000_000  # plotly.js is inline
    assert f"]({EXPLORER_FILE})" in (out / "report.md").read_text()
    assert len(list((out / ASSET_DIR).glob("r*_overlay_*.jpg"))) == 3
    off = build_report(made.dir, Options(n_boot=50, n_perm=100, examples_per_city=1, explorer=False))
    assert not (off / EXPLORER_FILE).exists() and not (off / ASSET_DIR).exists()
    assert EXPLORER_FILE not in (off / "report.md").read_text()


# ---- The page in a real browser.


def test_explorer_in_headless_chromium(explorer_sweep, chromium_driver, tmp_path: Path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    made = explorer_sweep
    page = build_report(made.dir, FAST) / EXPLORER_FILE
    screens = tmp_path / "screens"
    screens.mkdir()
    driver = chromium_driver(screens / "profile")
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.explorerReady === true"))
        points = driver.find_elements(By.CSS_SELECTOR, "#map-plot .scatterlayer .point")
        assert len(points) == len(made.ids)
        driver.save_screenshot(str(screens / "map.png"))

        ActionChains(driver).move_to_element(points[3]).perform()
        card = driver.find_element(By.ID, "hover-card")
        WebDriverWait(driver, 10).until(lambda d: card.is_displayed())
        hovered = card.text.splitlines()[0]
        assert hovered in made.ids and card.find_elements(By.CSS_SELECTOR, ".thumb")
        ActionChains(driver).pause(0.2).click().perform()
        WebDriverWait(driver, 10).until(
            lambda d: (
                d.find_element(By.ID, "view-image").is_displayed()
                and d.find_elements(By.CSS_SELECTOR, ".run-panel")
            )
        )
        clicked = driver.find_element(By.ID, "image-id").get_attribute("value")
        panels = driver.find_elements(By.CSS_SELECTOR, ".run-panel")
        assert [p.get_attribute("data-run") for p in panels] == ["simple-s0", "simple-s1", "simpler-s0"]
        assert {p.get_attribute("data-image") for p in panels} == {clicked} and clicked == hovered
        overlays = [p.find_elements(By.CSS_SELECTOR, ".thumb")[0] for p in panels]
        assert all(f"r{k}_overlay_0000.jpg" in o.get_attribute("style") for k, o in enumerate(overlays))
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.ar tr")) == 4
        driver.save_screenshot(str(screens / "image.png"))

        # Run 0 has concepts: its panel lists them by this image's importance and draws one over the image.
        (concepts,) = driver.find_elements(By.CSS_SELECTOR, ".run-panel .concepts")
        assert concepts.get_attribute("data-run") == "simple-s0"
        select = Select(concepts.find_element(By.CSS_SELECTOR, "select.concept-select"))
        assert select.first_selected_option.text.startswith("concept 1: signboard, Δlog P 0.500")
        canvas = concepts.find_element(By.CSS_SELECTOR, "canvas.concept-map")
        pixels = "return arguments[0].toDataURL()"
        before = driver.execute_script(pixels, canvas)
        assert canvas.get_attribute("data-concept") == "1"
        select.select_by_value("0")
        WebDriverWait(driver, 10).until(lambda d: canvas.get_attribute("data-concept") == "0")
        assert driver.execute_script(pixels, canvas) != before
        caption = concepts.find_element(By.CSS_SELECTOR, ".concept-caption").text
        assert caption.startswith("concept 0: road") and "(this image)" in caption
        # concept 0 sits on the top-left quarter: a cell there is opaque, one bottom-right transparent
        alpha = (
            "const c = arguments[0].getContext('2d');"
            "return [c.getImageData(1, 1, 1, 1).data[3], c.getImageData(6, 6, 1, 1).data[3]]"
        )
        top_left, bottom_right = driver.execute_script(alpha, canvas)
        assert top_left > 0 and bottom_right == 0
        driver.save_screenshot(str(screens / "concepts.png"))

        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-view=objects]").click()
        bars = (
            "return [...document.querySelectorAll('#objects-plots .bars path')].map(p => p.getAttribute('d'))"
        )
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(bars))
        before = driver.execute_script(bars)
        text = driver.execute_script("return document.querySelector('#objects-plots').textContent")
        assert "★ ◆ skyscraper" in text and "★ ◆ signboard" in text and "◆ road" in text
        assert driver.find_elements(By.CSS_SELECTOR, "#objects-plots .errorbar")
        driver.save_screenshot(str(screens / "objects.png"))
        Select(driver.find_element(By.ID, "objects-threshold")).select_by_visible_text("0.3")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(bars) != before)
        assert len(driver.execute_script(bars)) == len(before)

        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-view=pairs]").click()
        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pairs-plot .hm"))
        driver.save_screenshot(str(screens / "pairs.png"))

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
    for name in ("map", "image", "concepts", "objects", "pairs"):
        assert (screens / f"{name}.png").stat().st_size > 10_000
