"""Headless Chromium for the explorer's test and benchmark: Debian's `chromium` and `chromium-driver` (apt),
driven by selenium (the dev extra). Nothing is downloaded: the browser and its driver must be installed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths when Chromium, chromedriver and selenium are all installed, else None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver) or importlib.util.find_spec("selenium") is None:
        return None
    return browser, driver


def headless_chromium(profile: Path | None = None, width: int = 1400, height: int = 1000) -> Any:
    """A selenium WebDriver of a headless Chromium that records the page's console (browser log).

    Runs as root without a sandbox (CI) and without /dev/shm (small in containers); `profile` is its user
    data folder (a temporary one when None).
    """
    found = find_chromium()
    if found is None:
        raise RuntimeError("headless Chromium needs chromium and chromium-driver (apt) and selenium (pip)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    if profile is not None:
        options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(found[1]), options=options)
