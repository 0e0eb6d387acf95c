"""The upload reference: plain twisted.web taking PUT/POST bodies into the same store.

    python -m bench.servers.plain_put PORT DATA_DIR

Stock twisted.web reads the body (into a temp file above 100 kB), then the
resource puts it with ``LocalStore.put`` (temp file, fsync, rename: the same
code and directory as profiled's web role) under a random id, and answers
201. No checks, no queue: what any upload path costs at least.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from profiled.drivers.local.store import LocalStore


class Upload(Resource):
    isLeaf = True

    def __init__(self, store: LocalStore) -> None:
        super().__init__()
        self.store = store

    def render_PUT(self, request):  # type: ignore[no-untyped-def]
        content = request.content
        content.seek(0, 2)
        length = content.tell()
        content.seek(0)
        ctype = (request.getHeader(b"content-type") or b"application/octet-stream").decode()
        d = self.store.put(f"originals/{secrets.token_hex(16)}", content, length, ctype)

        def done(_: object) -> None:
            request.setResponseCode(201)
            request.finish()

        def failed(f: object) -> None:
            request.setResponseCode(503)
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET

    render_POST = render_PUT


def main() -> None:
    port, data_dir = int(sys.argv[1]), Path(sys.argv[2])
    store = LocalStore(data_dir / "private", reactor=reactor)  # type: ignore[arg-type]
    reactor.listenTCP(port, Site(Upload(store)), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
