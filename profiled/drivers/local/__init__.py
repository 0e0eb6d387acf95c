"""The ``local`` driver: store and queue in one directory, no outside service.

Everything lives under ``local.data_dir``: ``private/`` and ``public/`` are
two LocalStores, ``queue/`` is the LocalQueue. Several profiled processes on
one machine (web, proxy, workers) may share the directory: that is how the
roles talk to each other without a network service.
"""

from __future__ import annotations

from pathlib import Path

from profiled.config import Settings
from profiled.drivers import Drivers
from profiled.drivers.local.queue import LocalQueue
from profiled.drivers.local.store import LocalStore, ThreadingReactor

__all__ = ["LocalQueue", "LocalStore", "build_local"]


def build_local(settings: Settings, reactor: ThreadingReactor) -> Drivers:
    """Make the two stores and the queue under ``settings.local.data_dir``.

    Creates the directories if needed (so a fresh ``--data-dir`` just works)
    and, on the way, removes temp files that a crash left behind.
    """
    data_dir = Path(settings.local.data_dir)
    return Drivers(
        private=LocalStore(data_dir / "private", reactor=reactor),
        public=LocalStore(
            data_dir / "public",
            reactor=reactor,
            cache_bytes=settings.local.public_cache_mb * 1024 * 1024,
        ),
        queue=LocalQueue(
            data_dir / "queue",
            reactor=reactor,
            visibility_timeout=settings.worker.visibility_timeout,
            max_receives=settings.worker.max_attempts,
        ),
    )
