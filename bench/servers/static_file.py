"""The serving reference: a plain ``twisted.web.static.File`` over a directory.

python -m bench.servers.static_file PORT DIRECTORY
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File


def main() -> None:
    port, directory = int(sys.argv[1]), sys.argv[2]
    reactor.listenTCP(port, Site(File(directory)), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
