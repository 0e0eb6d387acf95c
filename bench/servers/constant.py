"""The floor of any twisted.web server: one resource answering every GET with the
same 8 KB body and the proxy's headers, no file, no thread, no log.

    python -m bench.servers.constant PORT

No design built on twisted.web's HTTP server can serve faster than this on
the same core; it is what a perfect in-memory cache in the proxy would cost.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

BODY = bytes(range(256)) * 32


class Constant(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"content-type", b"image/jpeg")
        request.setHeader(b"etag", b'"0123456789abcdef"')
        request.setHeader(b"cache-control", b"public, max-age=31536000, immutable")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        return BODY


class QuietSite(Site):
    def log(self, request):  # type: ignore[no-untyped-def]
        pass


def main() -> None:
    port = int(sys.argv[1])
    reactor.listenTCP(port, QuietSite(Constant()), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
