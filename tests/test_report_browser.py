"""Headless Chromium for the explorer's test: found only with browser, driver and selenium, refused by name
otherwise. The page test (the conftest fixture chromium_driver) is skipped off CI when Chromium is missing
and fails in CI (env CI set)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from citylens.report import browser
from citylens.report.browser import find_chromium, headless_chromium

INSTALLED = {"chromium": "/usr/bin/chromium", "chromedriver": "/usr/bin/chromedriver"}


def _which(found: dict[str, str]):
    return lambda name: found.get(name)


def test_find_chromium_needs_browser_driver_and_selenium(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "selenium" else None)
    monkeypatch.setattr(shutil, "which", _which(INSTALLED))
    assert find_chromium() == ("/usr/bin/chromium", "/usr/bin/chromedriver")
    monkeypatch.setattr(shutil, "which", _which({**INSTALLED, "chromium": None, "chromium-browser": "/b"}))
    assert find_chromium() == ("/b", "/usr/bin/chromedriver")  # the other name of the browser
    for missing in ("chromium", "chromedriver"):
        monkeypatch.setattr(shutil, "which", _which({k: v for k, v in INSTALLED.items() if k != missing}))
        assert find_chromium() is None, missing
    monkeypatch.setattr(shutil, "which", _which({}))
    assert find_chromium() is None


def test_find_chromium_without_selenium_is_none(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "which", _which(INSTALLED))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert find_chromium() is None


def test_headless_chromium_without_chromium_names_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shutil, "which", _which({}))
    with pytest.raises(RuntimeError, match=r"chromium and chromium-driver \(apt\) and selenium \(pip\)"):
        headless_chromium()


def test_missing_chromium_skips_off_ci_and_fails_in_ci(
    chromium_driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium-driver"):
        chromium_driver(tmp_path)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=".ci/run installs them"):
        chromium_driver(tmp_path)


def test_headless_chromium_opens_a_local_page_and_reads_its_title(chromium_driver, tmp_path: Path):
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><title>citylens browser check</title><p id='x'>ok</p>")
    driver = chromium_driver(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        assert driver.title == "citylens browser check"
        assert driver.execute_script("return document.getElementById('x').textContent") == "ok"
    finally:
        driver.quit()
