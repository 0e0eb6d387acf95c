"""The try-it page at ``/``: drop a photo, watch it become avatars.

Plain HTML, CSS and JavaScript in one file shipped in the package (no
build step), served only in ``--role=all`` with the local driver unless
switched on with ``web.try_page = "on"``.

Its Content-Security-Policy is strict: no ``'unsafe-inline'``. The page's
one ``<script>`` and one ``<style>`` element are allowed by their SHA-256
hashes, computed here when the page is loaded, so editing the page needs
no second place to update. Images may come from the page's own origin,
from the origin of ``web.image_url`` (the proxy's domain) and from
``blob:`` (the local preview of the chosen file); requests go to the
page's own origin only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from twisted.web.resource import Resource
from twisted.web.server import Request as WebRequest

if TYPE_CHECKING:
    from profiled.config import Settings

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def _hash_source(body: bytes) -> bytes:
    return b"'sha256-" + base64.b64encode(hashlib.sha256(body).digest()) + b"'"


def page_csp(html: bytes, image_origin: str | None = None) -> bytes:
    """The Content-Security-Policy that allows exactly the page's inline script and style."""
    scripts = [_hash_source(m.group(2)) for m in _INLINE.finditer(html) if m.group(1) == b"script"]
    styles = [_hash_source(m.group(2)) for m in _INLINE.finditer(html) if m.group(1) == b"style"]
    images = [b"'self'", b"blob:"]
    if image_origin:
        images.append(image_origin.encode("ascii"))
    return b"; ".join(
        [
            b"default-src 'none'",
            b"script-src " + (b" ".join(scripts) or b"'none'"),
            b"style-src " + (b" ".join(styles) or b"'none'"),
            b"img-src " + b" ".join(images),
            b"connect-src 'self'",
            b"base-uri 'none'",
            b"form-action 'none'",
            b"frame-ancestors 'none'",
        ]
    )


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


class TryPage(Resource):
    isLeaf = True

    def __init__(self, html: bytes, image_origin: str | None = None) -> None:
        super().__init__()
        self.html = html
        self.csp = page_csp(html, image_origin)

    def render_GET(self, request: WebRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", self.csp)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache")
        return self.html

    render_HEAD = render_GET


def try_page(settings: Settings | None = None) -> TryPage:
    """The page, allowed to show images from where ``settings`` says they are served."""
    html = files("profiled.web").joinpath("static/index.html").read_bytes()
    origin = origin_of(settings.image_url("0" * 32)) if settings is not None else None
    return TryPage(html, origin)
