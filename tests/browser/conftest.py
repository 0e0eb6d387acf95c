"""Headless Chromium for the browser tests: Debian's chromium and chromium-driver.

A fresh machine does not have them, so the session installs them with
apt-get when they are missing and it runs as root (as CI does); it skips,
saying why, only when they cannot be installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
#: As the task and the machine's notes ask: no sandbox (root), no GPU, and
#: none of Chromium's own network traffic (this machine's network is closed).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _have_browser() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def install_browser() -> str | None:
    """Install Debian's chromium and chromium-driver if missing; return why not, or None."""
    if _have_browser():
        return None
    missing = f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install {' '.join(PACKAGES)})"
    if shutil.which("apt-get") is None:
        return f"{missing}, and there is no apt-get here to install them"
    if os.geteuid() != 0:
        return f"{missing}, and only root can install them"
    install = ("install", "-y", "-q", "--no-install-recommends", *PACKAGES)
    try:
        done = _apt(*install, timeout=900)
        if done.returncode != 0:  # a fresh machine may have stale or no package lists
            _apt("update", "-q", timeout=600)
            done = _apt(*install, timeout=900)
    except subprocess.TimeoutExpired as e:
        return f"{missing}; apt-get timed out installing them: {e}"
    if done.returncode != 0 or not _have_browser():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-8:])
        return f"{missing}; apt-get could not install them:\n{tail}"
    return None


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The Chromium binary, installed first if need be (or the test is skipped, saying why)."""
    why = install_browser()
    if why is not None:
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by selenium, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
