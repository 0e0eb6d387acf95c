"""The image server: ``GET|HEAD /a/<id>[_<variant>]`` (API.md "Serving").

A plain twisted.web resource rather than a Klein app: this is the hot path,
and it needs nothing but one name check and one store read.

Names are checked against the raw request path before anything else: only
``<32 lowercase hex>`` with an optional ``_<configured variant>`` passes;
anything with ``/``, ``..``, ``%``-escapes or other bytes is a 404 that never
touches the store. Variants are immutable (an id is never reused), so a hit
is cached for a year; a miss only briefly, since the image may appear soon.
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest

from profiled.errors import NotFound, ProfiledError
from profiled.images import Layout
from profiled.interfaces import IStore, IStoredObject
from profiled.ops.metrics import Metrics
from profiled.web import errors

IMMUTABLE = b"public, max-age=31536000, immutable"
CSP = b"default-src 'none'; sandbox"
SERVED_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"})
PREFIX = b"/a/"
_NAME = re.compile(rb"[0-9a-z_]{1,64}")


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list against our ETag."""
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*":
            return True
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


class ImageProxy(Resource):
    """Serves variants from the public store."""

    isLeaf = True
    log = Logger()

    def __init__(self, public: IStore, layout: Layout, metrics: Metrics, miss_max_age: int):
        super().__init__()
        self.public = public
        self.layout = layout
        self.metrics = metrics
        self.miss_cache = f"public, max-age={miss_max_age}".encode()
        # The counters of the hot answers, looked up once rather than per request.
        self._hits = metrics.proxy_responses.labels("200")
        self._not_modified = metrics.proxy_responses.labels("304")
        self._misses = metrics.proxy_responses.labels("404")

    def render_GET(self, request: WebRequest) -> Any:
        return self._serve(request, with_body=True)

    def render_HEAD(self, request: WebRequest) -> Any:
        return self._serve(request, with_body=False)

    def _serve(self, request: WebRequest, with_body: bool) -> Any:
        name = self._name_of(request.path)
        parsed = self.layout.parse_public_name(name) if name is not None else None
        if parsed is None:
            return self._miss(request)
        image_id, variant = parsed
        d = self.public.get(self.layout.variant(image_id, variant))
        d.addCallback(self._found, request, with_body)
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    @staticmethod
    def _name_of(path: bytes) -> str | None:
        """The name after /a/ when it is plain ASCII without separators or escapes."""
        if not path.startswith(PREFIX):
            return None
        m = _NAME.fullmatch(path, len(PREFIX))
        return m.group(0).decode("ascii") if m else None

    def _security_headers(self, request: WebRequest) -> None:
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"cross-origin-resource-policy", b"cross-origin")
        request.setHeader(b"access-control-allow-origin", b"*")

    def _miss(self, request: WebRequest) -> bytes:
        self._misses.inc()
        self._security_headers(request)
        return errors.render_error(request, errors.not_found(), cache_control=self.miss_cache)

    def _found(self, obj: IStoredObject, request: WebRequest, with_body: bool) -> None:
        info = obj.info
        if info.content_type not in SERVED_TYPES:
            obj.abandon()  # never serve anything but the images the worker made
            request.write(self._miss(request))
            _finish(request)
            return
        etag = b'"' + info.etag.encode("ascii") + b'"'
        self._security_headers(request)
        request.setHeader(b"etag", etag)
        request.setHeader(b"cache-control", IMMUTABLE)
        inm = request.getHeader(b"if-none-match")
        if inm is not None and etag_matches(inm, etag):
            obj.abandon()
            self._not_modified.inc()
            request.setResponseCode(304)
            _finish(request)
            return
        self._hits.inc()
        request.setHeader(b"content-type", info.content_type.encode("ascii"))
        request.setHeader(b"content-length", str(info.size).encode("ascii"))
        if not with_body:
            obj.abandon()
            _finish(request)
            return
        done = obj.deliver(request)
        done.addCallbacks(lambda _: _finish(request), self._broken, errbackArgs=(request,))

    def _failed(self, failure: Failure, request: WebRequest) -> None:
        if failure.check(NotFound):
            request.write(self._miss(request))
            _finish(request)
            return
        if failure.check(ProfiledError):
            # Unavailable, or a store error such as access denied: the store's
            # trouble, not the client's, and worth a retry; never a 500.
            self.log.warn("public store failed: {error}", error=str(failure.value))
            error = errors.unavailable("the image store is unavailable")
        else:
            self.log.failure("unexpected error serving {path}", failure, path=request.path)
            error = errors.internal()
        self.metrics.proxy_responses.labels(str(error.code)).inc()
        request.write(errors.render_error(request, error))
        _finish(request)

    def _broken(self, failure: Failure, request: WebRequest) -> None:
        """The store broke off mid-body: the only honest answer is a cut connection."""
        self.log.warn(
            "store broke off serving {path}: {error}", path=request.path, error=str(failure.value)
        )
        cast(ITCPTransport, request.channel.transport).abortConnection()


def _finish(request: WebRequest) -> None:
    """Finish a response unless the client already went away."""
    if not getattr(request, "_disconnected", False):
        request.finish()
