"""Fault injection for end-to-end tests: a switchable HTTP proxy, process helpers, a tally.

``ChaosProxy`` sits between profiled and an S3/SQS endpoint (moto) on
127.0.0.1 and forwards requests unchanged (the Host header included, so
SigV4 signatures still verify), except those a rule picks: those it answers
with a 503 or drops without an answer, as a failing service would. Rules tell
S3 calls from SQS calls, and one bucket from another, so a test can take down
the private store, the public store or the queue on its own.
"""

from __future__ import annotations

import http.client
import os
import signal
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import attrs

#: A rule: (kind, method, path) -> "pass", "503" or "drop". kind is "sqs" or "s3".
Rule = Callable[[str, str, str], str]


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ChaosProxy:
    """A forwarding proxy on 127.0.0.1 whose rules can fail chosen calls."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.rule: Rule = lambda kind, method, path: "pass"
        self.faults = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = "sqs" if self.headers.get("X-Amz-Target") else "s3"
                action = proxy.rule(kind, self.command, self.path)
                if action != "pass":
                    with proxy._lock:
                        proxy.faults += 1
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "503":
                    payload = b"<Error><Code>ServiceUnavailable</Code></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ChaosProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, action: str, kind: str, method: str | None = None, bucket: str | None = None):
        """From now on, answer matching calls with ``action`` ("503" or "drop")."""

        def rule(k: str, m: str, path: str) -> str:
            if k != kind or (method and m != method):
                return "pass"
            if bucket and not path.startswith(f"/{bucket}/"):
                return "pass"
            return action

        self.rule = rule

    def heal(self) -> None:
        """Forward everything again."""
        self.rule = lambda kind, method, path: "pass"


def children_of(pid: int) -> list[int]:
    """Pids of the live (non-zombie) child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def crunch_children(pid: int) -> list[int]:
    """Pids of the crunch children of a profiled process."""
    kids = []
    for kid in children_of(pid):
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"profiled.crunch.child" in cmdline:
            kids.append(kid)
    return kids


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@attrs.define
class Tally:
    """What happened to every upload a fault test made: the count API.md promises."""

    accepted: list[str] = attrs.field(factory=list)
    refused: dict[int, int] = attrs.field(factory=dict)
    errors: int = 0
    outcomes: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def record(self, status: int | None, image_id: str | None = None) -> None:
        if status == 202 and image_id:
            self.accepted.append(image_id)
        elif status is None:
            self.errors += 1
        else:
            self.refused[status] = self.refused.get(status, 0) + 1

    def settle(self, get_status: Callable[[str], dict[str, Any] | None], timeout: float) -> None:
        """Poll every accepted id until it is ready or failed, or ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        pending = set(self.accepted)
        while pending and time.monotonic() < deadline:
            for image_id in list(pending):
                status = get_status(image_id)
                if status and status["status"] in ("ready", "failed"):
                    self.outcomes[image_id] = status
                    pending.discard(image_id)
            if pending:
                time.sleep(0.2)

    def assert_none_lost(self, want: Iterable[str] = ("ready", "failed")) -> None:
        """Every 202 ended in ``want`` (with a reason when failed): none lost, none pending."""
        lost = [i for i in self.accepted if i not in self.outcomes]
        assert lost == [], f"{len(lost)} of {len(self.accepted)} accepted uploads never ended"
        for image_id, status in self.outcomes.items():
            assert status["status"] in want, (image_id, status)
            if status["status"] == "failed":
                assert status.get("error"), (image_id, status)

    def count(self, state: str) -> int:
        return sum(1 for s in self.outcomes.values() if s["status"] == state)
