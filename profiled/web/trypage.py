"""The try-it page at ``/``: drop a photo, watch it become avatars.

Plain HTML, CSS and JavaScript shipped in the package (no build step),
served only in ``--role=all`` with the local driver unless switched on
with ``web.try_page = "on"``.
"""

from __future__ import annotations

from importlib.resources import files

from twisted.web.resource import Resource
from twisted.web.server import Request as WebRequest

# The page runs only its own inline script; images may come from the proxy's domain.
PAGE_CSP = (
    b"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"img-src *; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'"
)


class TryPage(Resource):
    isLeaf = True

    def __init__(self, html: bytes) -> None:
        super().__init__()
        self.html = html

    def render_GET(self, request: WebRequest) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", PAGE_CSP)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        return self.html


def try_page() -> TryPage:
    return TryPage(files("profiled.web").joinpath("static/index.html").read_bytes())
