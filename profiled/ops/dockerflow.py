"""Operations endpoints on every listener: Dockerflow and /metrics.

- ``/__lbheartbeat__``: the process is up (for load balancers; no I/O).
- ``/__heartbeat__``: the backends this role uses answer (200), or which
  do not (503), as JSON.
- ``/__version__``: version and commit, as JSON.
- ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest

from profiled import __version__
from profiled.ops.metrics import Metrics
from profiled.web.errors import render_json


def version_info() -> dict[str, str]:
    """Version and commit: PROFILED_COMMIT, or a version.json installed beside the package."""
    commit = os.environ.get("PROFILED_COMMIT", "")
    if not commit:
        path = Path(__file__).resolve().parent.parent / "version.json"
        try:
            commit = json.loads(path.read_text()).get("commit", "")
        except (OSError, ValueError):
            commit = ""
    return {"version": __version__, "commit": commit or "unknown", "source": "profiled"}


class LBHeartbeat(Resource):
    isLeaf = True

    def render_GET(self, request: WebRequest) -> bytes:
        return render_json(request, 200, {})

    render_HEAD = render_GET


class Version(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.info = version_info()

    def render_GET(self, request: WebRequest) -> bytes:
        return render_json(request, 200, self.info)


class Heartbeat(Resource):
    """Runs every check; 200 when all pass, else 503 with each failure named."""

    isLeaf = True

    def __init__(self, checks: Mapping[str, Callable[[], Deferred[Any]]]) -> None:
        super().__init__()
        self.checks = dict(checks)

    def render_GET(self, request: WebRequest) -> Any:
        names = list(self.checks)
        d = DeferredList([self.checks[n]() for n in names], consumeErrors=True)

        def report(results: list[tuple[bool, Any]]) -> None:
            body = {}
            for name, (ok, value) in zip(names, results, strict=True):
                body[name] = "ok" if ok else f"error: {value.getErrorMessage()}"
            healthy = all(ok for ok, _ in results)
            status = "ok" if healthy else "error"
            payload = render_json(
                request, 200 if healthy else 503, {"status": status, "checks": body}
            )
            if not getattr(request, "_disconnected", False):
                request.write(payload)
                request.finish()

        d.addCallback(report)
        return NOT_DONE_YET


class MetricsPage(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: WebRequest) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return self.metrics.render()


def ops_children(
    metrics: Metrics, checks: Mapping[str, Callable[[], Deferred[Any]]]
) -> dict[bytes, Resource]:
    """The operations resources, by first path segment."""
    return {
        b"__lbheartbeat__": LBHeartbeat(),
        b"__heartbeat__": Heartbeat(checks),
        b"__version__": Version(),
        b"metrics": MetricsPage(metrics),
    }
