"""What-if for the proxy: run ``twistd profiled --role=proxy`` with patches applied
in-process, to measure changes that belong to other modules before making them.

    python -m bench.experiments.proxy_whatif PATCHES -- TWISTD_ARGS...

PATCHES is a comma-separated list (or ``none``):

- ``nolog``: no per-request log line (``ProfiledSite.log`` does nothing);
- ``syncsmall``: the local store's ``get`` opens the manifest and reads a data
  file of at most 64 KiB on the reactor thread (a page-cache hit costs
  microseconds), and ``deliver`` writes it in one call: no thread-pool hop;
- ``noinstrument``: the public store is not wrapped in ``InstrumentedStore``.

Nothing here is used by profiled itself.
"""

from __future__ import annotations

import sys


def _patch_nolog() -> None:
    from profiled.web import request

    request.ProfiledSite.log = lambda self, r: None  # type: ignore[method-assign]


def _patch_syncsmall() -> None:
    from twisted.internet import defer
    from zope.interface import implementer

    from profiled.drivers.keys import check_key
    from profiled.drivers.local import store as st
    from profiled.errors import NotFound
    from profiled.interfaces import IStoredObject

    @implementer(IStoredObject)
    class _Bytes:
        def __init__(self, info: object, data: bytes) -> None:
            self.info, self.data = info, data

        def deliver(self, consumer):  # type: ignore[no-untyped-def]
            consumer.write(self.data)
            return defer.succeed(None)

        def abandon(self) -> None:
            pass

    original = st.LocalStore.get

    def get(self, key):  # type: ignore[no-untyped-def]
        try:
            check_key(key)
            opened = self._open(key)
        except Exception:
            return original(self, key)
        if opened is None:
            return defer.fail(NotFound(key))
        info, f = opened
        if info.size > 64 * 1024:
            return defer.succeed(st._LocalObject(info, f, self._blocking))
        with f:
            data = f.read()
        return defer.succeed(_Bytes(info, data))

    st.LocalStore.get = get  # type: ignore[method-assign]


def _patch_noinstrument() -> None:
    from profiled import service

    service.instrumented = lambda drivers, metrics: drivers  # type: ignore[assignment]


PATCHES = {
    "nolog": _patch_nolog,
    "syncsmall": _patch_syncsmall,
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
