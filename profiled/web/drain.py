"""A graceful stop for a listener: let requests in flight finish.

On SIGTERM twistd stops every service; the endpoint service stops
listening at once, and this one holds the stop until the requests already
received are answered (an upload being stored and queued, an image being
streamed), for at most ``grace`` seconds. Connections still open after that
are closed when the reactor stops.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from profiled.web.request import ProfiledSite


class DrainService(Service):
    """Waits, on stop, for ``site``'s requests in flight (bounded)."""

    log = Logger()

    def __init__(
        self, site: ProfiledSite, clock: IReactorTime, grace: float = 15.0, poll: float = 0.1
    ) -> None:
        self.site, self.clock, self.grace, self.poll = site, clock, grace, poll

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        deadline = self.clock.seconds() + self.grace
        if self.site.active:
            self.log.info("waiting for {n} request(s) in flight", n=len(self.site.active))
        while self.site.active and self.clock.seconds() < deadline:
            await deferLater(self.clock, self.poll, lambda: None)
        if self.site.active:
            self.log.warn(
                "stopping with {n} request(s) unfinished after {s}s",
                n=len(self.site.active),
                s=self.grace,
            )
