"""Logs: one JSON object per line on stdout, in mozlog's shape.

Bridges twisted.logger: every event becomes
``{"Timestamp", "Type", "Logger", "Hostname", "EnvVersion", "Severity",
"Pid", "Fields"}``. Fields carry the formatted message and the event's own
keys, but only plain values (str, int, float, bool, None): bytes, objects
and anything else are left out, so image data can never reach a log line.
Keys that name secrets are dropped whatever their value. Legacy
``twisted.python.log`` events (twistd's own, ``log.err``) and Failures go
the same way: the message, plus ``error`` and ``traceback`` fields.

``RequestLog`` writes the one ``request.summary`` line per answered HTTP
request (method, path without its query, status, bytes, duration, image
id, remote address) and feeds the HTTP metrics; ``ProfiledSite.log`` calls
it in place of twisted.web's combined log line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.web.server import Request

    from profiled.ops.metrics import Metrics

SEVERITY = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}
SECRET_WORDS = ("token", "secret", "password", "authorization", "credential", "cookie")
_PLAIN = (str, int, float, bool, type(None))
#: Event keys that are twisted.logger's bookkeeping, not fields of the line.
_NOT_FIELDS = frozenset(
    ("message", "format", "time", "system", "isError", "printed", "failure", "why")
)
#: Whether each event key seen so far may be a field (the same few keys come
#: with every line; checking them against SECRET_WORDS each time adds up).
_field_verdicts: dict[str, bool] = {}


def _field_allowed(key: str) -> bool:
    """Whether an event key may appear in a line: not bookkeeping, not a secret's name."""
    verdict = _field_verdicts.get(key)
    if verdict is None:
        verdict = not (
            key.startswith(("log_", "_"))
            or key in _NOT_FIELDS
            or any(word in key.lower() for word in SECRET_WORDS)
        )
        if len(_field_verdicts) < 4096:  # keys are names in code; bound it anyway
            _field_verdicts[key] = verdict
    return verdict


@implementer(ILogObserver)
class MozlogObserver:
    """Writes each event at or above ``level`` as one JSON line."""

    def __init__(
        self, stream: IO[str], level: LogLevel = LogLevel.info, logger: str = "profiled"
    ) -> None:
        self.stream = stream
        self.level = level
        self.logger = logger
        self.hostname = socket.gethostname()
        self.pid = os.getpid()

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < self.level:
            return
        self.stream.write(json.dumps(self.record(event), separators=(",", ":")) + "\n")
        self.stream.flush()

    def record(self, event: dict[str, Any]) -> dict[str, Any]:
        """The mozlog object for one event."""
        fields: dict[str, Any] = {}
        failure = event.get("log_failure")
        if failure is None and isinstance(event.get("failure"), Failure):
            failure = event["failure"]  # log.err(): the legacy bridge leaves it there
        legacy = event.get("log_namespace") == "log_legacy" or "log_text" in event
        if failure is not None and legacy:
            # log.err(failure, why): the legacy text is "why" plus the whole
            # traceback, which has a field of its own.
            message = str(event.get("why") or "Unhandled error")
        elif (fmt := event.get("log_format")) is not None:
            # A format without braces is its own text (RequestLog's lines
            # come formatted): skip the formatter, a third of a line's cost.
            message = fmt if "{" not in fmt and "}" not in fmt else formatEvent(event)
        elif "message" in event:  # a legacy event that did not go through the bridge
            message = " ".join(str(m) for m in event["message"])
        else:
            message = None
        if message:
            fields["msg"] = message
        for key, value in event.items():
            if isinstance(value, _PLAIN) and _field_allowed(key):
                fields[key] = value
        if failure is not None:
            fields["error"] = failure.getErrorMessage()
            fields["traceback"] = failure.getTraceback()
        level = event.get("log_level", LogLevel.info)
        return {
            "Timestamp": int(event.get("log_time", time.time()) * 1e9),
            "Type": event.get("log_namespace", "log"),
            "Logger": self.logger,
            "Hostname": self.hostname,
            "EnvVersion": "2.0",
            "Severity": SEVERITY.get(level, 6),
            "Pid": self.pid,
            "Fields": fields,
        }


#: The image id in an API or proxy path.
_ID_IN_PATH = re.compile(r"/(?:v1/images|a)/([0-9a-f]{32})(?:_[a-z0-9_-]+)?")
_LONGEST = 300


def route_of(path: str) -> str:
    """Which part of profiled a path belongs to, as a metric label."""
    if path == "/v1" or path.startswith("/v1/"):
        return "api"
    if path.startswith("/a/"):
        return "proxy"
    if path.startswith("/__") or path == "/metrics":
        return "ops"
    if path == "/":
        return "page"
    return "other"


def _printable(raw: bytes | str | None, longest: int = _LONGEST) -> str:
    text = (raw.decode("latin-1") if isinstance(raw, bytes) else (raw or ""))[:longest]
    if text.isprintable():  # nearly always: one C call instead of one per character
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


class RequestLog:
    """The ``request.summary`` line and the HTTP metrics of each answered request.

    Never logs headers other than the User-Agent, nor query strings (where
    clients put tokens), nor bodies.
    """

    def __init__(
        self,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        quiet_routes: frozenset[str] = frozenset(),
    ) -> None:
        """``quiet_routes``: routes (see ``route_of``) whose answers below 500
        are counted in the metrics but get no line (``proxy.access_log = false``)."""
        self.clock = clock
        self.metrics = metrics
        self.quiet_routes = quiet_routes
        # An instance attribute: as a class attribute, Logger names itself after the class.
        self.log = Logger(namespace="request.summary", source=self)
        #: The metric children of each (route, status), looked up once.
        self._counters: dict[tuple[str, int], tuple[Any, Any]] = {}

    def stamping(self, factory: Callable[..., Request]) -> Callable[..., Request]:
        """Wrap a Site's ``requestFactory`` so each request notes when its first line came."""

        def make(*args: Any, **kw: Any) -> Request:
            request = factory(*args, **kw)
            request.profiled_started = self.clock.seconds()  # type: ignore[attr-defined]
            return request

        return make

    def fields(
        self, request: Request, path: str, route: str, seconds: float | None
    ) -> dict[str, Any]:
        """The summary of one answered request (its printable path, route and
        duration worked out once by the caller, which counts them too)."""
        fields: dict[str, Any] = {
            "method": _printable(request.method, 16),
            "path": path,
            "route": route,
            "status": int(request.code),
            "bytes": int(request.sentLength),
        }
        if seconds is not None:
            fields["duration_ms"] = round(seconds * 1000, 1)
        found = _ID_IN_PATH.fullmatch(path)
        if found is None and fields["method"] == "POST":  # an upload: its new id
            location = request.responseHeaders.getRawHeaders(b"location", [b""])[0]
            found = _ID_IN_PATH.fullmatch(_printable(location))
        if found is not None:
            fields["id"] = found.group(1)
        peer = request.getClientAddress()
        fields["remote"] = str(getattr(peer, "host", "") or "")
        forwarded = request.getHeader(b"x-forwarded-for")
        if forwarded:
            fields["forwarded_for"] = _printable(forwarded, 200)
        agent = request.getHeader(b"user-agent")
        if agent:
            fields["agent"] = _printable(agent, 200)
        return fields

    def __call__(self, request: Request) -> None:
        path = _printable(request.path)
        route, status = route_of(path), int(request.code)
        started = getattr(request, "profiled_started", None)
        seconds = None if started is None else max(0.0, self.clock.seconds() - started)
        if self.metrics is not None:
            counted = self._counters.get((route, status))
            if counted is None:
                counted = self._counters[(route, status)] = (
                    self.metrics.http_responses.labels(route, str(status)),
                    self.metrics.http_seconds.labels(route),
                )
            counted[0].inc()
            if seconds is not None:
                counted[1].observe(seconds)
        if route in self.quiet_routes and status < 500:
            return
        fields = self.fields(request, path, route, seconds)
        # Formatted here, braces escaped: the observers need not format it again.
        text = (
            f"{fields['method']} {fields['path']} {status} {fields['bytes']} bytes"
            f" in {fields.get('duration_ms')} ms"
        )
        if "{" in text or "}" in text:
            text = text.replace("{", "{{").replace("}", "}}")
        self.log.info(text, **fields)
