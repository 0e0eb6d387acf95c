"""Settings + roles -> one MultiService.

Each role is a set of child services: the web and proxy roles are
resources on a listener, the worker role is the crunch pool and the
receive loop (plus a listener of its own for the operations endpoints).
Roles never talk to each other: only through the store and the queue.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import ILogObserver, Logger
from twisted.web.resource import IResource

from profiled.config import Settings
from profiled.crunch.sniff import ImageLimits
from profiled.drivers import Drivers, build_drivers
from profiled.images import Layout
from profiled.interfaces import IAdoptingStore
from profiled.ops.dockerflow import ops_children
from profiled.ops.logging import LEVELS, MozlogObserver, RequestLog
from profiled.ops.metrics import InstrumentedQueue, InstrumentedStore, Metrics
from profiled.proxy.resource import ImageProxy
from profiled.root import Root
from profiled.web.drain import DrainService
from profiled.web.request import BodyPolicy, ProfiledSite

log = Logger()


class ProfiledService(MultiService):
    """The top service; also tells twistd to log as JSON when so configured."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def setServiceParent(self, parent: IServiceCollection) -> None:
        super().setServiceParent(parent)
        if self.settings.log.format == "json" and hasattr(parent, "setComponent"):
            # twistd asks the application for an ILogObserver before using
            # its own text observer (twisted.application.app.AppLogger.start).
            parent.setComponent(  # type: ignore[union-attr]
                ILogObserver, MozlogObserver(sys.stdout, LEVELS[self.settings.log.level])
            )


def roles_of(settings: Settings) -> set[str]:
    return {"web", "worker", "proxy"} if settings.role == "all" else {settings.role}


def instrumented(drivers: Drivers, metrics: Metrics) -> Drivers:
    return Drivers(
        private=InstrumentedStore(drivers.private, "private", metrics),
        public=InstrumentedStore(drivers.public, "public", metrics),
        queue=InstrumentedQueue(drivers.queue, metrics),
    )


def make_service(
    settings: Settings,
    reactor: Any,
    drivers: Drivers | None = None,
    roles: set[str] | None = None,
) -> ProfiledService:
    """Build every service the configured role needs.

    ``reactor`` provides IReactorCore, IReactorTime, IReactorProcess and
    IReactorThreads (Twisted's types cannot say "all of these" in one name).
    ``drivers`` and ``roles`` are for tests: other drivers than the
    configured ones, or a subset of the roles of ``--role=all``.
    """
    top = ProfiledService(settings)
    metrics = Metrics()
    drivers = instrumented(drivers or build_drivers(settings, reactor), metrics)
    roles = roles if roles is not None else roles_of(settings)
    layout = Layout(settings.images.variants)

    checks: dict[str, Any] = {}
    if roles & {"web", "worker"}:
        checks["private_store"] = drivers.private.ping
        checks["queue"] = drivers.queue.ping
    if roles & {"worker", "proxy"}:
        checks["public_store"] = drivers.public.ping
    children: dict[bytes, IResource] = dict(ops_children(metrics, checks))

    if "worker" in roles:
        from profiled.crunch.pool import CrunchPool
        from profiled.worker.service import WorkerService

        concurrency = settings.worker.concurrency or os.cpu_count() or 1
        pool = CrunchPool(
            reactor,
            size=concurrency,
            memory_limit=settings.images.crunch_memory_mb * 1024 * 1024,
            time_limit=settings.images.crunch_seconds,
            max_jobs_per_child=settings.worker.max_jobs_per_child,
            on_event=metrics.pool_event,
        )
        pool.setServiceParent(top)
        WorkerService(settings, drivers, pool, metrics, reactor, concurrency).setServiceParent(top)

    if "proxy" in roles:
        children[b"a"] = ImageProxy(
            drivers.public, layout, metrics, settings.proxy.not_found_max_age
        )

    api = index = gate = None
    if "web" in roles:
        from profiled.web.api import UploadAPI
        from profiled.web.auth_factory import build_gate

        gate = build_gate(settings, reactor)
        api = UploadAPI(settings, drivers, gate, metrics, reactor).resource()
        if settings.role == "all" and _try_page_on(settings):
            from profiled.web.trypage import try_page

            index = try_page(settings)

    images = settings.images
    adopting = drivers.private if IAdoptingStore.providedBy(drivers.private) else None
    policy = BodyPolicy(
        max_bytes=settings.web.max_bytes,
        limits=ImageLimits(images.max_pixels, images.max_side, images.max_frames),
        formats=("jpeg", "png", "gif", "webp", "avif"),
        body_timeout=settings.web.body_timeout,
        on_early_answer=lambda e: metrics.uploads.labels(
            "failed" if e.code >= 500 else "refused", str(e.code)
        ).inc(),
        admit=gate.admit if gate is not None else None,
        # Uploads are spooled where the private store can adopt them (the
        # local store), so their bytes are written once, not twice.
        spool_store=adopting if api is not None else None,
    )
    site = ProfiledSite(Root(children, api=api, index=index), policy, reactor)
    quiet = frozenset() if settings.proxy.access_log else frozenset({"proxy"})
    site.request_log = RequestLog(reactor, metrics, quiet_routes=quiet)
    site.requestFactory = site.request_log.stamping(site.requestFactory)  # type: ignore[assignment]
    role_for_listener = "web" if settings.role == "all" else settings.role
    endpoint = serverFromString(reactor, settings.listen_for(role_for_listener))
    StreamServerEndpointService(endpoint, site).setServiceParent(top)
    DrainService(site, reactor).setServiceParent(top)
    return top


def _try_page_on(settings: Settings) -> bool:
    mode = settings.web.try_page
    return mode == "on" or (mode == "auto" and settings.driver.name == "local")
