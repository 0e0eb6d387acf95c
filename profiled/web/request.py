"""A twisted.web Request that does not buffer bodies blindly.

Stock twisted.web reads a whole request body (into memory or a temp file,
of any size) before any resource sees the request. Here the body goes to an
``UploadSpool`` (for ``POST /v1/images``) or a small capped buffer (for
everything else) as it arrives, so that:

- a Content-Length over the limit is answered 413 before the body is read;
- a chunked body is cut off as soon as it passes the limit;
- a body whose first bytes are not an accepted image, or whose header
  breaks a limit, is refused without reading (or storing) the rest;
- a body that trickles in too slowly is cut off after ``body_timeout``.

Such early answers are written straight to the transport with
``Connection: close``; the connection then lingers briefly, discarding
what the client still sends, so that the client reads the answer instead
of a connection reset (nginx's "lingering close").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server

from profiled.crunch.sniff import ImageLimits
from profiled.interfaces import IAdoptingStore
from profiled.web import errors
from profiled.web.errors import APIError
from profiled.web.spool import SmallBody, UploadSpool

UPLOAD_PATH = b"/v1/images"


@attrs.frozen
class BodyPolicy:
    """How request bodies are received; one per listener."""

    max_bytes: int
    limits: ImageLimits
    formats: tuple[str, ...]
    body_timeout: float = 60.0
    small_body_bytes: int = 64 * 1024
    spool_dir: str | None = None
    #: The private store, when it can adopt an upload spooled into its own space.
    spool_store: IAdoptingStore | None = None
    #: Seconds to keep reading (and dropping) after an early answer.
    linger: float = 2.0
    #: Called with each early answer to an upload (POST /v1/images), for metrics.
    on_early_answer: Callable[[APIError], None] | None = None
    #: Called with (request, method, path) once the headers are in: an
    #: APIError refuses the request before its body is read (rate limits, auth).
    admit: Callable[[server.Request, bytes, bytes], APIError | None] | None = None


class ProfiledChannel(http.HTTPChannel):
    """An HTTPChannel that gives each request head a deadline.

    twisted.web's idle timeout starts again with every byte received, so a
    client that trickles its request line and headers a byte at a time (or
    sends nothing after connecting) holds a connection for as long as it
    likes. Here the head must be complete within ``body_timeout`` of the
    connection being made, or of the previous answer on a kept-alive one.
    """

    _head_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm_head_timer()

    def allHeadersReceived(self) -> None:
        self._cancel_head_timer()
        super().allHeadersReceived()

    def requestDone(self, request: http.Request) -> None:
        super().requestDone(request)
        if (
            self.persistent
            and self.transport is not None
            and not getattr(self.transport, "disconnecting", False)
        ):
            self._arm_head_timer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_head_timer()
        super().connectionLost(reason)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        site = self.site  # type: ignore[attr-defined]
        self._head_timer = site.reactor.callLater(
            site.body_policy.body_timeout, self._head_too_slow
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        peer = self.transport.getPeer() if self.transport is not None else None
        self._log.info("closing a connection whose request head is too slow: {p}", p=str(peer))
        if self.transport is not None:
            # What was answered before on a kept-alive connection is still sent.
            self.transport.loseConnection()


class ProfiledSite(server.Site):
    """A Site whose requests follow a BodyPolicy."""

    protocol = ProfiledChannel  # type: ignore[assignment]

    def __init__(self, resource, policy: BodyPolicy, reactor: IReactorTime, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(
            resource, requestFactory=ProfiledRequest, parsePOSTFormSubmission=False, **kw
        )
        self.body_policy = policy
        self.reactor = reactor
        #: Requests received and not yet answered (for a graceful stop).
        self.active: set[ProfiledRequest] = set()

    def track(self, request: ProfiledRequest) -> None:
        """Count ``request`` as in flight until it is answered or its client goes."""
        self.active.add(request)
        request.notifyFinish().addBoth(lambda _: self.active.discard(request))

    def log(self, request: http.Request) -> None:
        """One ``request.summary`` line per answered request, instead of twisted.web's
        combined log line (profiled.ops.logging.RequestLog, set by profiled.service)."""
        request_log = getattr(self, "request_log", None)
        if request_log is None:
            from profiled.ops.logging import RequestLog

            request_log = self.request_log = RequestLog(self.reactor)
        request_log(cast(server.Request, request))


class ProfiledRequest(server.Request):
    """Receives bodies under the site's BodyPolicy (see the module docstring)."""

    _log = Logger()
    answered_early: APIError | None = None
    body_error: APIError | None = None
    _dropped = 0
    #: The whole body arrived: from then on the resource owns it (and closes it).
    _body_complete = False
    _body_timer: IDelayedCall | None = None
    _linger_timer: IDelayedCall | None = None

    @property
    def _site(self) -> ProfiledSite:
        return cast(ProfiledSite, self.channel.site)  # type: ignore[attr-defined]

    @property
    def _body(self) -> UploadSpool | SmallBody:
        return cast(UploadSpool | SmallBody, self.content)

    @property
    def _transport(self) -> ITCPTransport:
        return cast(ITCPTransport, self.channel.transport)

    def gotLength(self, length: int | None) -> None:
        site = self._site
        site.track(self)
        policy: BodyPolicy = site.body_policy
        method = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        if method == b"POST" and path == UPLOAD_PATH:
            limit = policy.max_bytes
            content_type = self.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
            self.content = UploadSpool(
                policy.max_bytes,
                policy.limits,
                policy.formats,
                content_type.decode("latin-1"),
                policy.spool_dir,
                policy.spool_store,
            )
        else:
            limit = policy.small_body_bytes
            self.content = SmallBody(limit)
        if policy.admit is not None:
            refusal = policy.admit(self, method, path)
            if refusal is not None:
                self.answer_early(refusal)
                return
        if length is not None and length > limit:
            self.answer_early(errors.too_large(limit))
            return
        if self.content.error is not None:
            self.answer_early(self.content.error)
            return
        if length != 0:
            self._body_timer = site.reactor.callLater(policy.body_timeout, self._too_slow)

    def handleContentChunk(self, data: bytes) -> None:
        if self.answered_early is not None:
            # Lingering: drop what still comes, but not for ever.
            self._dropped += len(data)
            if self._dropped > self._site.body_policy.max_bytes:
                self._transport.abortConnection()
            return
        self._body.write(data)
        if self._body.error is not None:
            self.answer_early(self._body.error)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._cancel(self._body_timer)
        if self.answered_early is not None:
            self._transport.loseConnection()
            return
        #: The verdict on the body (None: accepted), for the resource to act on.
        self.body_error = self._body.finish()
        self._body_complete = True
        super().requestReceived(command, path, version)

    def answer_early(self, error: APIError) -> None:
        """Answer now, before the body is complete, and close after lingering."""
        if self.answered_early is not None:
            return
        self.answered_early = error
        self._cancel(self._body_timer)
        # Twisted would otherwise send "100 Continue" after our answer.
        self.requestHeaders.removeHeader(b"expect")
        policy: BodyPolicy = self._site.body_policy
        if policy.on_early_answer is not None and isinstance(
            getattr(self, "content", None), UploadSpool
        ):
            policy.on_early_answer(error)
        self._log.info(
            "refused {method} {path} early: {code} {message}",
            method=getattr(self.channel, "_command", b"").decode("latin-1"),
            path=getattr(self.channel, "_path", b"")[:200].decode("latin-1"),
            code=error.code,
            message=error.message,
        )
        raw = error.raw_response()
        self._transport.write(raw)
        self.channel.persistent = False
        # The access log sees early answers too: give the request what a
        # normal answer would have set before logging it.
        self.method = getattr(self.channel, "_command", b"")
        self.uri = getattr(self.channel, "_path", b"")
        self.path = self.uri.split(b"?", 1)[0]
        self.code = error.code
        self.sentLength = len(error.body())
        self._site.log(self)
        self._linger_timer = self._site.reactor.callLater(
            policy.linger, self._transport.loseConnection
        )

    def _too_slow(self) -> None:
        self._body_timer = None
        if self.answered_early is None:
            self.answer_early(errors.timed_out())
            self._cancel(self._linger_timer)
            self._transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        self._cancel(self._body_timer)
        self._cancel(self._linger_timer)
        close = getattr(self.content, "close", None)
        if close is not None and (self.answered_early is not None or not self._body_complete):
            # A body spooled into the store's space is a named file: one cut
            # off mid-way must go now, not at the next start's sweep.
            close()
        super().connectionLost(reason)

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()
