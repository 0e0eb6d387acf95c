"""What-if for the proxy: run ``twistd profiled --role=proxy`` with patches applied
in-process, to measure changes that belong to other modules before making them.

    python -m bench.experiments.proxy_whatif PATCHES -- TWISTD_ARGS...

PATCHES is a comma-separated list (or ``none``):

- ``noinstrument``: the stores and queue are not wrapped in ``InstrumentedStore``
  / ``InstrumentedQueue`` (no backend latency histograms).

Earlier what-ifs (no per-request log line; small files read without a thread
hop) became ``proxy.access_log`` and the local store's read cache.
Nothing here is used by profiled itself.
"""

from __future__ import annotations

import sys


def _patch_noinstrument() -> None:
    from profiled import service

    service.instrumented = lambda drivers, metrics: drivers  # type: ignore[assignment]


PATCHES = {
    "noinstrument": _patch_noinstrument,
}


def main() -> None:
    patches, rest = sys.argv[1], sys.argv[3:]
    for name in patches.split(","):
        if name != "none":
            PATCHES[name]()
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *rest]
    run()


if __name__ == "__main__":
    main()
