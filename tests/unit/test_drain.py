"""A graceful stop waits for requests in flight, but not for ever."""

from __future__ import annotations

from profiled.web.drain import DrainService
from tests.unit.test_web_api import jpeg
from tests.unit.wire import make_harness, parse_responses


def _upload_head(n: int) -> bytes:
    return (
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % n
    )


def test_stop_waits_for_upload_in_flight():
    """The stop fires only once the upload that was arriving has been answered."""
    h = make_harness()
    data = jpeg()
    proto, transport = h.connect()
    proto.dataReceived(_upload_head(len(data)) + data[:100])
    drain = DrainService(h.site, h.clock, grace=15)
    drain.startService()
    stopped = drain.stopService()
    h.clock.pump([0.1] * 10)
    assert not stopped.called
    proto.dataReceived(data[100:])
    h.clock.pump([0.1, 0.1])
    assert stopped.called
    [r] = parse_responses(transport.value())
    assert r.status == 202


def test_stop_is_bounded():
    """A request that never completes delays the stop by the grace period only."""
    h = make_harness({"PROFILED_WEB_BODY_TIMEOUT": "600"})
    proto, _ = h.connect()
    proto.dataReceived(_upload_head(1000) + b"\xff\xd8")
    drain = DrainService(h.site, h.clock, grace=5)
    drain.startService()
    stopped = drain.stopService()
    h.clock.pump([0.1] * 48)
    assert not stopped.called
    h.clock.pump([0.1] * 4)
    assert stopped.called


def test_idle_site_stops_at_once():
    """With nothing in flight the stop fires immediately."""
    h = make_harness()
    drain = DrainService(h.site, h.clock)
    drain.startService()
    assert drain.stopService().called
