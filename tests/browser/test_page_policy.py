"""The try-it page's Content-Security-Policy, checked without a browser."""

from __future__ import annotations

import base64
import hashlib
import re

from profiled.config import load_settings
from profiled.web.trypage import origin_of, page_csp, try_page


def directives(csp: bytes) -> dict[str, list[str]]:
    out = {}
    for part in csp.decode().split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_policy_allows_exactly_the_inline_script_and_style():
    """No 'unsafe-inline': the page's own script and style are allowed by their hashes only."""
    page = try_page()
    policy = directives(page.csp)
    assert "'unsafe-inline'" not in page.csp.decode()
    assert "'unsafe-eval'" not in page.csp.decode()
    assert policy["default-src"] == ["'none'"]
    for tag, directive in ((b"script", "script-src"), (b"style", "style-src")):
        bodies = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page.html, re.DOTALL)
        assert len(bodies) == 1
        digest = base64.b64encode(hashlib.sha256(bodies[0]).digest()).decode()
        assert policy[directive] == [f"'sha256-{digest}'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert b" style=" not in page.html  # a style attribute would be blocked


def test_images_may_come_from_the_proxy_origin():
    """img-src names the origin of web.image_url, besides the page's own and blob: previews."""
    settings = load_settings(
        environ={"PROFILED_WEB_IMAGE_URL": "https://avatars.example.net/a/{id}"}, role="all"
    )
    assert directives(try_page(settings).csp)["img-src"] == [
        "'self'",
        "blob:",
        "https://avatars.example.net",
    ]
    assert directives(page_csp(b"<p>no script</p>"))["script-src"] == ["'none'"]
    assert origin_of("http://127.0.0.1:8080/a/x") == "http://127.0.0.1:8080"
    assert origin_of("javascript:alert(1)") is None
