"""JSON log lines: the mozlog shape, the request and job lines, and what never goes in them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image
from twisted.application.service import Application
from twisted.logger import (
    ILogObserver,
    Logger,
    LoggingFile,
    LogLevel,
    LogPublisher,
    capturedLogs,
)
from twisted.python import log as legacy_log
from twisted.python.failure import Failure

from profiled.config import load_settings
from profiled.ops.logging import MozlogObserver, route_of
from profiled.service import ProfiledService
from profiled.web.auth import token_digest
from tests import images
from tests.unit.wire import make_harness
from tests.unit.worker_rig import make_worker_rig

MOZLOG_KEYS = {"Timestamp", "Type", "Logger", "Hostname", "EnvVersion", "Severity", "Pid", "Fields"}
CANARY = b"profiled-log-canary-7d1f"
TOKEN = "tok-very-secret-4c2a"


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def observed(level: LogLevel = LogLevel.info) -> tuple[Logger, io.StringIO]:
    """A Logger whose events go only to a MozlogObserver writing into a string."""
    stream = io.StringIO()
    return Logger(namespace="test.space", observer=MozlogObserver(stream, level)), stream


def canary_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(out, "JPEG", comment=CANARY)
    return out.getvalue()


def render(events: list[dict[str, Any]]) -> str:
    """The JSON lines these events become."""
    stream = io.StringIO()
    observer = MozlogObserver(stream, LogLevel.debug)
    for event in events:
        observer(event)
    return stream.getvalue()


def summaries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == "request.summary"]


# -- the observer ------------------------------------------------------------


def test_event_becomes_one_mozlog_line():
    """An event is one JSON object on one line, with every mozlog key and its fields."""
    log, stream = observed()
    log.info("hello {who}", who="world", count=3, ratio=0.5, ok=True, nothing=None)
    (line,) = lines_of(stream)
    assert set(line) == MOZLOG_KEYS
    assert line["Type"] == "test.space"
    assert line["Logger"] == "profiled"
    assert line["EnvVersion"] == "2.0"
    assert line["Severity"] == 6
    assert isinstance(line["Timestamp"], int) and line["Timestamp"] > 1.6e18  # nanoseconds
    assert isinstance(line["Pid"], int) and line["Hostname"]
    assert line["Fields"] == {
        "msg": "hello world",
        "who": "world",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "nothing": None,
    }


def test_levels_map_to_syslog_severities_and_filter():
    """Levels become syslog severities; events below the configured level are dropped."""
    log, stream = observed(LogLevel.info)
    log.debug("hidden")
    log.info("i")
    log.warn("w")
    log.error("e")
    log.critical("c")
    assert [(x["Fields"]["msg"], x["Severity"]) for x in lines_of(stream)] == [
        ("i", 6),
        ("w", 4),
        ("e", 3),
        ("c", 2),
    ]


def test_only_plain_values_and_no_secret_keys():
    """Bytes and objects never become fields, nor any key that names a secret."""
    log, stream = observed()
    log.info(
        "upload",
        body=b"\xff\xd8" + CANARY,
        data=bytearray(CANARY),
        thing=object(),
        authorization="Bearer " + TOKEN,
        access_token=TOKEN,
        client_secret=TOKEN,
        password=TOKEN,
        size=12,
    )
    text = stream.getvalue()
    assert CANARY.decode() not in text and TOKEN not in text
    assert lines_of(stream)[0]["Fields"] == {"msg": "upload", "size": 12}


def test_failure_has_error_and_traceback_fields():
    """A logged Failure gives error and traceback fields; the message stays one line."""
    log, stream = observed()
    try:
        raise ValueError("broken thing")
    except ValueError:
        log.failure("while doing {what}", what="work")
    (line,) = lines_of(stream)
    assert line["Severity"] == 2
    assert line["Fields"]["msg"] == "while doing work"
    assert line["Fields"]["error"] == "broken thing"
    assert "Traceback" in line["Fields"]["traceback"]
    assert "ValueError: broken thing" in line["Fields"]["traceback"]


def test_legacy_log_events_and_errors_are_lines_too():
    """twisted.python.log messages and log.err Failures come out as mozlog lines."""
    stream = io.StringIO()
    publisher = legacy_log.LogPublisher(publishPublisher=LogPublisher(MozlogObserver(stream)))
    publisher.msg("Site starting on", 8080, system="legacy")
    failure = Failure(RuntimeError("legacy boom"))
    publisher.msg(failure=failure, why="Unhandled error in Deferred:", isError=1)
    started, err = lines_of(stream)
    assert started["Type"] == "log_legacy"
    assert started["Fields"] == {"msg": "Site starting on 8080"}
    assert err["Severity"] == 2
    assert err["Fields"]["msg"] == "Unhandled error in Deferred:"
    assert err["Fields"]["error"] == "legacy boom"
    assert "RuntimeError: legacy boom" in err["Fields"]["traceback"]
    assert "Traceback" not in err["Fields"]["msg"]


def test_printed_output_becomes_a_line():
    """What code prints (twistd redirects stdout into the log) is a JSON line, not raw text."""
    log, stream = observed()
    LoggingFile(log, LogLevel.info).write("a stray print\n")
    (line,) = lines_of(stream)
    assert line["Fields"]["msg"] == "a stray print"


def test_twistd_application_gets_the_json_observer():
    """The service gives twistd's application a MozlogObserver with json logs, none with text."""
    app = Application("profiled")
    ProfiledService(load_settings(environ={"PROFILED_LOG_FORMAT": "json"})).setServiceParent(app)
    assert isinstance(app.getComponent(ILogObserver), MozlogObserver)
    text_app = Application("profiled")
    ProfiledService(load_settings(environ={"PROFILED_LOG_FORMAT": "text"})).setServiceParent(
        text_app
    )
    assert text_app.getComponent(ILogObserver) is None


# -- one line per request ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/images", "api"),
        ("/v1/images/x", "api"),
        ("/a/x", "proxy"),
        ("/__heartbeat__", "ops"),
        ("/metrics", "ops"),
        ("/", "page"),
        ("/favicon.ico", "other"),
        ("/v1x", "other"),
    ],
)
def test_routes_of_paths(path: str, route: str):
    """Paths are grouped into a few routes for the metrics label."""
    assert route_of(path) == route


def test_one_request_line_with_its_fields():
    """An answered request logs exactly one request.summary line with its fields."""
    h = make_harness()
    with capturedLogs() as events:
        r = h.request("GET", "/__lbheartbeat__", headers={"User-Agent": "probe/1.0"})
    (summary,) = summaries(events)
    assert summary["method"] == "GET"
    assert summary["path"] == "/__lbheartbeat__"
    assert summary["route"] == "ops"
    assert summary["status"] == 200
    assert summary["bytes"] == len(r.body)
    assert summary["remote"] == "127.0.0.1"
    assert summary["agent"] == "probe/1.0"
    assert summary["duration_ms"] == 0.0
    assert "id" not in summary
    (line,) = [json.loads(x) for x in render([summary]).splitlines()]
    assert line["Type"] == "request.summary"
    assert line["Fields"]["msg"] == "GET /__lbheartbeat__ 200 2 bytes in 0.0 ms"


def test_no_combined_log_line_as_well():
    """twisted.web's combined access-log line is not written beside the JSON one."""
    h = make_harness()
    with capturedLogs() as events:
        h.request("GET", "/__version__")
    text = render(events)
    assert "HTTP/1.1" not in text
    assert len(summaries(events)) == 1


def test_duration_runs_from_the_first_line():
    """The duration covers the whole request, the time its body took to arrive included."""
    h = make_harness()
    data = images.jpeg()
    head = (
        "POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    proto, _ = h.connect()
    with capturedLogs() as events:
        proto.dataReceived(head + data[:100])
        h.clock.advance(0.25)
        proto.dataReceived(data[100:])
    (summary,) = summaries(events)
    assert summary["status"] == 202
    assert summary["duration_ms"] == 250.0


def test_lines_carry_the_image_id():
    """Upload, status, delete and proxy lines carry the image id; the upload's from Location."""
    h = make_harness()
    with capturedLogs() as events:
        image_id = h.upload(images.jpeg()).json()["id"]
        h.request("GET", f"/v1/images/{image_id}")
        h.request("GET", f"/a/{image_id}_small")
        h.request("DELETE", f"/v1/images/{image_id}")
    found = [(s["method"], s["status"], s.get("id")) for s in summaries(events)]
    assert found == [
        ("POST", 202, image_id),
        ("GET", 200, image_id),
        ("GET", 404, image_id),
        ("DELETE", 204, image_id),
    ]


def test_proxy_access_log_can_be_turned_off():
    """proxy.access_log = false: /a/ answers below 500 get no line but are still
    counted; the API's lines stay, and a proxy 503 still gets one."""
    h = make_harness({"PROFILED_PROXY_ACCESS_LOG": "false"})
    with capturedLogs() as events:
        image_id = h.upload(images.jpeg()).json()["id"]
        h.request("GET", f"/a/{image_id}")
        h.request("GET", "/a/not-an-id")
        h.drivers.public.down = True
        h.request("GET", f"/a/{image_id}")
    found = [(s["method"], s["route"], s["status"]) for s in summaries(events)]
    assert found == [("POST", "api", 202), ("GET", "proxy", 503)]
    text = h.request("GET", "/metrics").body.decode()
    assert 'profiled_http_responses_total{code="404",route="proxy"} 2.0' in text


def test_no_credentials_query_or_image_bytes_in_any_line():
    """Tokens (header or query string) and image bytes appear in no log line of a request."""
    env = {"PROFILED_AUTH_MODE": "bearer", "PROFILED_AUTH_TOKENS": f"alice:{token_digest(TOKEN)}"}
    h = make_harness(env)
    data = canary_jpeg()
    with capturedLogs() as events:
        assert h.upload(data, Authorization="Bearer " + TOKEN).status == 202
        assert h.upload(data, Authorization="Bearer wrong-" + TOKEN).status == 401
        h.request("GET", f"/v1/images/{'0' * 32}?access_token={TOKEN}")
        assert h.upload(CANARY * 50, Authorization="Bearer " + TOKEN).status == 415
    text = render(events)
    assert len(summaries(events)) == 4  # early answers (the 401, the 415) are summarised too
    assert len([e for e in events if "early" in e.get("log_format", "")]) == 2
    assert TOKEN not in text
    assert CANARY.decode() not in text
    assert data[-64:].hex() not in text
    assert "access_token" not in text


# -- one line per job ----------------------------------------------------------------


def job_lines(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in render(events).splitlines()]
    return [x for x in lines if x["Fields"].get("msg", "").startswith("job ")]


def test_ready_job_line_is_structured():
    """A finished job logs one line with id, outcome, attempt and its timings as fields."""
    rig = make_worker_rig()
    image_id = rig.enqueue(images.jpeg((80, 60)))
    rig.clock.advance(1.5)
    with capturedLogs() as events:
        rig.run(rig.receive())
    (line,) = job_lines(events)
    fields = line["Fields"]
    assert fields["id"] == image_id
    assert fields["outcome"] == "ready"
    assert fields["attempt"] == 1
    assert fields["queue_lag_ms"] == 1500
    assert fields["source_format"] == "jpeg"
    assert isinstance(fields["duration_ms"], int) and isinstance(fields["crunch_ms"], int)
    assert "reason" not in fields
    assert line["Severity"] == 6


def test_failed_job_line_has_its_reason():
    """A job whose image cannot be crunched logs outcome failed with the reason as a field."""
    rig = make_worker_rig()
    image_id = rig.enqueue(images.truncated(images.jpeg((200, 200))))
    with capturedLogs() as events:
        rig.run(rig.receive())
    (line,) = job_lines(events)
    assert line["Fields"]["id"] == image_id
    assert line["Fields"]["outcome"] == "failed"
    assert line["Fields"]["reason"] == "corrupt"
    assert line["Fields"]["detail"]
    assert f"job {image_id} failed (corrupt) in " in line["Fields"]["msg"]


def test_retried_and_parked_job_lines():
    """Transient errors log outcome retry, then dead_lettered on the last try, with the reason."""
    rig = make_worker_rig({"PROFILED_WORKER_MAX_ATTEMPTS": "2", "PROFILED_WORKER_RETRY_DELAY": "1"})
    image_id = rig.enqueue(images.jpeg())
    rig.raw.public.down = True
    with capturedLogs() as events:
        rig.run(rig.receive())
        rig.clock.advance(5)
        rig.run(rig.receive())
    first, last = job_lines(events)
    assert [first["Fields"]["outcome"], last["Fields"]["outcome"]] == ["retry", "dead_lettered"]
    for line in (first, last):
        assert line["Fields"]["id"] == image_id
        assert line["Fields"]["reason"] == "Unavailable"
        assert line["Severity"] == 4
    assert [first["Fields"]["attempt"], last["Fields"]["attempt"]] == [1, 2]


def test_early_answers_get_a_request_summary_line():
    """An upload refused from its headers is logged like any answered request."""
    from twisted.logger import globalLogPublisher

    from tests.unit.wire import make_harness

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = make_harness({"PROFILED_WEB_MAX_BYTES": "100"})
        h.send(
            [
                b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 101\r\n\r\n"
            ]
        )
    finally:
        globalLogPublisher.removeObserver(events.append)
    summaries = [e for e in events if e.get("log_namespace") == "request.summary"]
    assert [(e["method"], e["path"], e["status"]) for e in summaries] == [
        ("POST", "/v1/images", 413)
    ]
