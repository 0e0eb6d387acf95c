"""The try-it page in a real headless Chromium against a real ``twistd --role=all``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.harness import REPO, Twistd, running, wait_until
from tests.e2e.photos import sideways_jpeg

pytestmark = pytest.mark.browser

SCREENSHOTS = REPO / "test-output"
#: The upright photo is 300x400; each variant fits its box and is never enlarged.
EXPECTED = {"small": (75, 100), "default": (150, 200), "large": (300, 400)}
NOT_AN_IMAGE = b"Dear diary, this is not a photo at all.\n" * 20

VARIANTS_JS = """
return Array.from(document.querySelectorAll('#variants figure')).map(f => {
  const img = f.querySelector('img'), r = img.getBoundingClientRect();
  return {name: img.dataset.variant, complete: img.complete, w: img.naturalWidth,
          h: img.naturalHeight, left: r.left, bottom: r.bottom,
          caption: f.querySelector('figcaption').textContent};
});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """One --role=all server on the local driver, with its try-it page at /."""
    work = tmp_path_factory.mktemp("try-page")
    env = {"PROFILED_WORKER_POLL_WAIT": "1", "PROFILED_WORKER_CONCURRENCY": "1"}
    with running(Twistd(["--role=all", f"--data-dir={work / 'var'}"], work, env)) as (twistd,):
        yield twistd


def open_page(browser: Any, server: Twistd) -> None:
    browser.get(server.url + "/")
    wait_until(
        lambda: browser.execute_script("return document.body.dataset.state") == "idle",
        10,
        what="the page to load",
    )


def choose(browser: Any, path: Path) -> None:
    """Pick a file through the page's file input, as a person's file chooser does."""
    browser.find_element("id", "file").send_keys(str(path))


def state_becomes(browser: Any, states: tuple[str, ...], timeout: float = 30) -> str:
    return wait_until(
        lambda: (s := browser.execute_script("return document.body.dataset.state")) in states and s,
        timeout,
        what=f"the page state to become {'/'.join(states)}",
    )


def screenshot(browser: Any, name: str) -> None:
    """Save the whole page (not only the window) under test-output/, a test artifact."""
    SCREENSHOTS.mkdir(exist_ok=True)
    size = browser.get_window_size()
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(size["width"], max(size["height"], height + 140))
    try:
        browser.save_screenshot(str(SCREENSHOTS / name))
    finally:
        browser.set_window_size(size["width"], size["height"])


def csp_complaints(browser: Any) -> list[str]:
    return [
        e["message"]
        for e in browser.get_log("browser")
        if "Content Security Policy" in e["message"] or "Content-Security-Policy" in e["message"]
    ]


def test_photo_becomes_three_variants(browser: Any, server: Twistd, tmp_path: Path):
    """A photo picked in the page uploads, turns ready, shows three variants, and can be deleted."""
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(sideways_jpeg())
    open_page(browser, server)
    assert (
        browser.execute_script(
            "return getComputedStyle(document.getElementById('drop')).borderTopStyle"
        )
        == "dashed"
    ), "the page's style sheet did not apply (CSP hash?)"

    choose(browser, photo)
    assert state_becomes(browser, ("ready", "error")) == "ready", browser.find_element(
        "id", "error"
    ).text

    def rendered() -> list[dict[str, Any]] | None:
        found = browser.execute_script(VARIANTS_JS)
        done = len(found) == 3 and all(v["complete"] and v["w"] > 0 for v in found)
        return found if done else None

    variants = wait_until(rendered, 15, what="three variants to render")
    assert {v["name"]: (v["w"], v["h"]) for v in variants} == EXPECTED
    # Side by side, smallest first, on one baseline.
    assert [v["name"] for v in variants] == ["small", "default", "large"]
    assert variants[0]["left"] < variants[1]["left"] < variants[2]["left"]
    assert max(v["bottom"] for v in variants) - min(v["bottom"] for v in variants) < 2
    wait_until(
        lambda: all("\u00d7" in v["caption"] for v in browser.execute_script(VARIANTS_JS)),
        5,
        what="the captions to show each size",
    )
    status = browser.find_element("id", "status").text
    assert status.startswith("Ready in "), status
    steps = browser.execute_script(
        "return Array.from(document.querySelectorAll('#steps li')).map(li => li.className)"
    )
    assert steps == ["done", "done", "done"]
    screenshot(browser, "try-page-ready.png")
    assert csp_complaints(browser) == []

    image_id = status.split(" of ")[-1].rstrip(".")
    assert server.get(f"/v1/images/{image_id}").status_code == 200
    browser.find_element("id", "delete").click()
    assert state_becomes(browser, ("deleted", "error"), 10) == "deleted"
    assert server.get(f"/v1/images/{image_id}").status_code == 404


def test_non_image_shows_the_api_error(browser: Any, server: Twistd, tmp_path: Path):
    """A text file named .jpg is refused, and the page shows the API's own error message."""
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(NOT_AN_IMAGE)
    expected = requests.post(
        server.url + "/v1/images",
        data=NOT_AN_IMAGE,
        headers={"Content-Type": "image/jpeg"},
        timeout=10,
    )
    assert expected.status_code == 415
    open_page(browser, server)

    choose(browser, fake)
    assert state_becomes(browser, ("ready", "error", "processing")) == "error"
    message = browser.find_element("id", "error-message").text
    assert message == "Refused: " + expected.json()["message"]
    assert "415" in browser.find_element("id", "error-meta").text
    assert browser.find_elements("css selector", "#variants img") == []
    screenshot(browser, "try-page-error.png")
    assert csp_complaints(browser) == []
