"""Drive a ProfiledSite with raw HTTP bytes over an in-memory transport.

No sockets: the same Request class and body handling as in production,
fed byte by byte if a test wants, with a Clock for timeouts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from profiled.config import Settings, load_settings
from profiled.drivers import Drivers
from profiled.drivers.memory import MemoryQueue, MemoryStore
from profiled.service import make_service
from tests.unit.inline_reactor import InlineReactor


@attrs.define
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self):  # type: ignore[no-untyped-def]
        import json

        return json.loads(self.body)


def parse_responses(raw: bytes) -> list[Response]:
    """Split a transport's output into responses (100 Continue included)."""
    out = []
    rest = raw
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body += rest[:size]
                rest = rest[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            body, rest = rest[:length], rest[length:]
        out.append(Response(status, headers, body, head + sep + body))
    return out


@attrs.define
class Harness:
    """A whole --role=all service on memory drivers, minus its listener."""

    settings: Settings
    drivers: Drivers
    site: object
    clock: Clock

    def connect(self) -> tuple[object, StringTransport]:
        proto = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        proto.makeConnection(transport)
        return proto, transport

    def send(self, chunks: Iterable[bytes]) -> tuple[list[Response], StringTransport]:
        proto, transport = self.connect()
        for chunk in chunks:
            if transport.disconnecting or getattr(transport, "disconnected", False):
                break
            proto.dataReceived(chunk)
        return parse_responses(transport.value()), transport

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        hdrs = dict(headers or {})
        if body is not None and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        head += "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        responses, _ = self.send([head.encode("latin-1") + (body or b"")])
        finals = [r for r in responses if r.status != 100]
        assert len(finals) == 1, responses
        return finals[0]

    def upload(self, data: bytes, content_type: str = "image/jpeg", **headers: str) -> Response:
        return self.request("POST", "/v1/images", data, {"Content-Type": content_type, **headers})


#: A Clock whose thread pool runs each call at once, so that the local driver
#: (whose disk calls go to the reactor's pool) runs without threads.
InlineClock = InlineReactor


def make_harness(
    env: dict[str, str] | None = None,
    private: Callable[[Clock], object] | None = None,
) -> Harness:
    """--role=all over memory drivers (or the private store ``private`` makes from
    the harness's clock); the worker is not started."""
    settings = load_settings(environ=env or {}, role="all")
    clock = InlineClock()
    drivers = Drivers(
        private(clock) if private else MemoryStore(),  # type: ignore[arg-type]
        MemoryStore(),
        MemoryQueue(clock),
    )
    top = make_service(settings, clock, drivers, roles={"web", "proxy"})  # type: ignore[arg-type]
    site = next(s for s in top if hasattr(s, "factory")).factory
    return Harness(settings, drivers, site, clock)


def stored_original_count(h: Harness) -> int:
    return sum(1 for k in h.drivers.private.objects if k.startswith("originals/"))
