"""The AWS client, S3 store and SQS queue against a scripted in-memory server.

No sockets and no real time: requests go through treq's
RequestTraversalAgent to a resource that plays back canned answers, and
retries, backoff and timeouts run on a ``task.Clock``.
"""

from __future__ import annotations

import datetime
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from botocore.credentials import RefreshableCredentials
from hypothesis import given
from hypothesis import strategies as st
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet import defer, error, task
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from zope.interface import implementer

from profiled.drivers.aws.client import (
    AccessDenied,
    AwsClient,
    AwsError,
    AwsNotFound,
    CredentialSource,
    RetryPolicy,
    SourceError,
    parse_error,
)
from profiled.drivers.aws.s3 import S3Store, _BodyPump, decode_meta, encode_meta
from profiled.drivers.aws.sqs import SQSQueue
from profiled.drivers.consumers import FileConsumer
from profiled.errors import LostClaim, NotFound, Unavailable
from profiled.interfaces import Message

ENDPOINT = "http://s3.test:9000"


@attrs.define
class Seen:
    """One request as the server received it."""

    method: str
    uri: str
    headers: dict[str, str]
    body: bytes


class Script(Resource):
    """Answers each request with the next canned (status, headers, body)."""

    isLeaf = True

    def __init__(self, *replies: tuple[int, dict[str, str], bytes]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.seen: list[Seen] = []

    def render(self, request: Any) -> bytes:
        self.seen.append(
            Seen(
                request.method.decode(),
                request.uri.decode(),
                {
                    k.decode().lower(): v[0].decode()
                    for k, v in request.requestHeaders.getAllRawHeaders()
                },
                request.content.read(),
            )
        )
        status, headers, body = self.replies.pop(0)
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


@implementer(IAgent)
class ScriptedAgent:
    """Fails or hangs the first requests as told, then lets the Script answer."""

    def __init__(self, resource: Resource, trouble: list[Any] | None = None) -> None:
        self.inner = RequestTraversalAgent(resource)
        self.trouble = list(trouble or [])
        self.attempts = 0

    def request(self, method, uri, headers=None, bodyProducer=None):  # type: ignore[no-untyped-def]
        self.attempts += 1
        if self.trouble:
            what = self.trouble.pop(0)
            if what == "hang":
                return Deferred()
            return defer.fail(what)
        return self.inner.request(method, uri, headers, bodyProducer)


def inline(f: Callable[[], Any]) -> Deferred[Any]:
    """Stands in for deferToThread in tests that need no thread."""
    return defer.maybeDeferred(f)


def make_client(
    agent: ScriptedAgent, clock: task.Clock, retry: RetryPolicy | None = None
) -> AwsClient:
    return AwsClient(
        CredentialSource(
            CredentialSource.static("AKIDTEST", "secret")._resolve, run_in_thread=inline
        ),
        "us-east-1",
        HTTPClient(agent),
        clock,
        retry or RetryPolicy(attempts=4, base=1.0, cap=3.0, random=lambda: 1.0),
        timeout=5.0,
    )


def settle(agent: ScriptedAgent, clock: task.Clock, d: Deferred[Any], step: float = 1.0) -> None:
    """Pump the fake network and clock until ``d`` fires (bounded)."""
    for _ in range(200):
        agent.inner.flush()
        if d.called:
            return
        clock.advance(step)
    raise AssertionError("deferred never fired")


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def setup_store(*replies, trouble=None, retry=None):  # type: ignore[no-untyped-def]
    clock = task.Clock()
    script = Script(*replies)
    agent = ScriptedAgent(script, trouble)
    coop = task.Cooperator(scheduler=lambda f: clock.callLater(0, f))
    store = S3Store(make_client(agent, clock, retry), ENDPOINT, "bucket", cooperator=coop)
    return store, script, agent, clock


OK = (200, {"ETag": '"abc123"'}, b"")
UNAVAILABLE = (503, {}, b"<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>")
SLOWDOWN = (503, {}, b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>")


def test_put_sends_the_signed_path_and_only_length_bytes():
    """A PUT goes to the encoded path that was signed, streaming just `length` bytes."""
    store, script, agent, clock = setup_store(OK)
    source = io.BytesIO(b"skipHELLOtrailing")
    source.seek(4)
    d = store.put(
        "with space/and+plus~tilde", source, 5, "image/png", {"principal": "ünï"}, "no-cache"
    )
    settle(agent, clock, d, step=0)
    info = result(d)
    [seen] = script.seen
    assert seen.uri == "/bucket/with%20space/and%2Bplus~tilde"
    assert seen.body == b"HELLO"
    assert seen.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert seen.headers["x-amz-meta-principal"] == "%C3%BCn%C3%AF"
    assert seen.headers["content-type"] == "image/png"
    assert seen.headers["cache-control"] == "no-cache"
    assert "x-amz-meta-principal" in seen.headers["authorization"]
    assert info.etag == "abc123" and info.size == 5
    assert not source.closed


def test_put_retries_rewind_the_source():
    """A PUT retried after a 503 sends the same bytes again from the start."""
    store, script, agent, clock = setup_store(UNAVAILABLE, OK)
    source = io.BytesIO(b"xxdata")
    source.seek(2)
    d = store.put("k", source, 4, "text/plain")
    settle(agent, clock, d, step=0.5)
    result(d)
    assert [s.body for s in script.seen] == [b"data", b"data"]


class _Spool:
    """A file-like object with read/seek/tell but no seekable(), like the upload spool."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.read, self.seek, self.tell = self._f.read, self._f.seek, self._f.tell


def test_put_retries_a_duck_typed_seekable_source():
    """A source with seek and tell but no seekable() is still rewound for a retry."""
    store, script, agent, clock = setup_store(UNAVAILABLE, OK)
    d = store.put("k", _Spool(b"spooled"), 7, "image/png")  # type: ignore[arg-type]
    settle(agent, clock, d, step=0.5)
    result(d)
    assert [s.body for s in script.seen] == [b"spooled", b"spooled"]


def test_put_from_a_short_source_fails_without_retry():
    """A source that ends before `length` is the caller's error, not retried."""
    store, _, agent, clock = setup_store(OK, OK)
    d = store.put("k", io.BytesIO(b"abc"), 10, "text/plain")
    settle(agent, clock, d, step=0.5)
    with pytest.raises(SourceError, match="source ended"):
        result(d)
    assert agent.attempts == 1


def test_put_refuses_metadata_names_that_are_not_header_safe():
    """Metadata names must survive as lower-case header names."""
    store, _, _, _ = setup_store()
    with pytest.raises(ValueError, match="metadata name"):
        result(store.put("k", io.BytesIO(b"x"), 1, "text/plain", {"Has Space": "v"}))


def test_backoff_waits_on_the_clock_and_doubles():
    """Each retry waits base * 2**n on the injected clock before going again."""
    store, script, agent, clock = setup_store(UNAVAILABLE, UNAVAILABLE, (404, {}, b""))
    d = store.head("k")
    agent.inner.flush()
    assert len(script.seen) == 1
    clock.advance(0.99)
    agent.inner.flush()
    assert len(script.seen) == 1
    clock.advance(0.01)
    agent.inner.flush()
    assert len(script.seen) == 2
    clock.advance(1.99)
    agent.inner.flush()
    assert len(script.seen) == 2
    clock.advance(0.01)
    agent.inner.flush()
    assert len(script.seen) == 3
    assert result(d) is None


def test_backoff_is_capped_and_jittered():
    """The pause is uniform in [0, min(cap, base * 2**n)]."""
    policy = RetryPolicy(base=0.5, cap=4.0, random=lambda: 1.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    half = RetryPolicy(base=0.5, cap=4.0, random=lambda: 0.5)
    assert half.delay(10) == 2.0
    assert RetryPolicy(random=lambda: 0.0).delay(3) == 0.0


def test_503_until_attempts_run_out_is_unavailable():
    """Server errors are retried `attempts` times, then fail with Unavailable."""
    store, script, agent, clock = setup_store(*[UNAVAILABLE] * 4)
    d = store.get("k")
    settle(agent, clock, d)
    with pytest.raises(Unavailable, match="ServiceUnavailable"):
        result(d)
    assert len(script.seen) == 4


def test_throttling_is_retried():
    """SlowDown (S3) is throttling: retried, and the call succeeds afterwards."""
    store, script, agent, clock = setup_store(SLOWDOWN, (200, {"Content-Length": "3"}, b""))
    d = store.head("k")
    settle(agent, clock, d)
    assert result(d).size == 3
    assert len(script.seen) == 2


def test_connection_errors_are_retried_then_unavailable():
    """Refused connections are retried and end in Unavailable naming the cause."""
    refused = error.ConnectionRefusedError()
    store, _, agent, clock = setup_store(trouble=[refused] * 4)
    d = store.ping()
    settle(agent, clock, d)
    with pytest.raises(Unavailable, match="ConnectionRefusedError"):
        result(d)
    assert agent.attempts == 4


def test_a_hung_request_times_out_and_is_retried():
    """A request with no answer is abandoned after the timeout and tried again."""
    store, _, agent, clock = setup_store((200, {}, b""), trouble=["hang"])
    d = store.ping()
    settle(agent, clock, d)
    result(d)
    assert agent.attempts == 2
    assert clock.seconds() >= 5.0


def test_lost_response_is_retried():
    """A connection that drops before the answer (ResponseFailed) is retried."""
    store, _, agent, clock = setup_store(
        (204, {}, b""), trouble=[ResponseFailed([Failure(error.ConnectionLost())])]
    )
    d = store.delete("k")
    settle(agent, clock, d)
    result(d)
    assert agent.attempts == 2


def test_404_is_not_found_and_head_is_none():
    """A missing key is NotFound for get and None for head, without retries."""
    body = b"<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>"
    store, script, agent, clock = setup_store((404, {}, body), (404, {}, b""))
    d = store.get("missing")
    settle(agent, clock, d)
    with pytest.raises(NotFound):
        result(d)
    d = store.head("missing")
    settle(agent, clock, d)
    assert result(d) is None
    assert len(script.seen) == 2


def test_403_is_access_denied_and_not_retried():
    """A refused signature or permission fails at once with AccessDenied."""
    body = (
        b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"
        b"<RequestId>R1</RequestId></Error>"
    )
    store, script, agent, clock = setup_store((403, {}, body))
    d = store.get("k")
    settle(agent, clock, d)
    with pytest.raises(
        AccessDenied, match=r"AccessDenied \(HTTP 403\): Access Denied \[request R1\]"
    ):
        result(d)
    assert len(script.seen) == 1


def test_missing_bucket_is_a_clear_error_not_a_missing_object():
    """NoSuchBucket is a configuration error, so head does not answer None."""
    body = b"<Error><Code>NoSuchBucket</Code><Message>no bucket</Message></Error>"
    store, _, agent, clock = setup_store((404, {}, body))
    d = store.get("k")
    settle(agent, clock, d)
    with pytest.raises(AwsError, match="NoSuchBucket") as caught:
        result(d)
    assert not isinstance(caught.value, NotFound)


NON_EXISTENT = "AWS.SimpleQueueService.NonExistentQueue"
SIGNATURE_XML = (
    b"<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code></Error></Errors>"
    b"</ErrorResponse>"
)


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "code"),
    [
        (
            400,
            {},
            b'{"__type":"com.amazonaws.sqs#QueueDoesNotExist"}',
            AwsNotFound,
            "QueueDoesNotExist",
        ),
        (400, {}, b'{"__type":"x#ThrottlingException"}', Unavailable, "ThrottlingException"),
        (400, {"x-amzn-query-error": f"{NON_EXISTENT};Sender"}, b"", AwsNotFound, NON_EXISTENT),
        (403, {}, SIGNATURE_XML, AccessDenied, "SignatureDoesNotMatch"),
        (400, {}, b'{"__type":"x#InvalidParameterValue"}', AwsError, "InvalidParameterValue"),
        (500, {}, b"not xml at all", Unavailable, "500"),
        (429, {}, b"", Unavailable, "429"),
    ],
)
def test_parse_error(status, headers, body, kind, code):
    """S3 XML, SQS JSON and query-error headers map to the right exception and code."""
    e = parse_error(status, headers, body)
    assert isinstance(e, kind)
    assert e.code == code


class _Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class _SlowConsumer(FileConsumer):
    """Pauses its producer after every write, like a full socket."""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.producer.pauseProducing()  # type: ignore[union-attr]


def test_get_body_pauses_the_socket_when_the_consumer_pauses():
    """A paused consumer pauses the HTTP transport: back-pressure, not buffering."""
    sink = io.BytesIO()
    consumer = _SlowConsumer(sink)
    pump = _BodyPump(consumer, 6)
    transport = _Transport()
    pump.makeConnection(transport)
    assert consumer.producer is pump
    pump.dataReceived(b"abc")
    assert transport.calls == ["pause"]
    pump.resumeProducing()
    pump.dataReceived(b"def")
    pump.connectionLost(Failure(ResponseDone()))
    assert result(pump.done) is None
    assert sink.getvalue() == b"abcdef"
    assert consumer.producer is None
    assert transport.calls == ["pause", "resume", "pause"]


def test_get_body_cut_short_is_unavailable():
    """A body that ends before its Content-Length fails with Unavailable."""
    pump = _BodyPump(FileConsumer(io.BytesIO()), 10)
    pump.makeConnection(_Transport())
    pump.dataReceived(b"abc")
    pump.connectionLost(Failure(ResponseFailed([Failure(error.ConnectionLost())])))
    with pytest.raises(Unavailable, match="3 of 10"):
        result(pump.done)


@given(st.text())
def test_metadata_values_round_trip(value):
    """Any string survives the trip through an ASCII header value."""
    encoded = encode_meta(value)
    assert encoded.isascii() and encoded == encoded.strip() and encoded
    assert decode_meta(encoded) == value


# -- credentials --------------------------------------------------------------


def test_static_credentials_are_resolved_once():
    """Credentials that never expire are looked up once and then handed out at once."""
    calls = []

    def run(f):  # type: ignore[no-untyped-def]
        calls.append(f)
        return defer.maybeDeferred(f)

    source = CredentialSource(CredentialSource.static("A", "B")._resolve, run_in_thread=run)
    assert result(source.get()).access_key == "A"
    assert result(source.get()).secret_key == "B"
    assert len(calls) == 1


def test_concurrent_lookups_share_one_thread_call():
    """Callers that arrive while a look-up runs wait for it instead of starting another."""
    pending: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def run(f):  # type: ignore[no-untyped-def]
        d: Deferred[Any] = Deferred()
        pending.append((d, f))
        return d

    source = CredentialSource(CredentialSource.static("A", "B")._resolve, run_in_thread=run)
    first, second = source.get(), source.get()
    assert len(pending) == 1
    d, f = pending[0]
    d.callback(f())
    assert result(first) == result(second)


def test_no_credentials_is_access_denied():
    """An empty credential chain is reported as such, not as a network error."""
    source = CredentialSource(lambda: None, run_in_thread=inline)
    with pytest.raises(AccessDenied, match="NoCredentials"):
        result(source.get())


def test_a_failing_credential_service_is_unavailable():
    """When the metadata service or STS fails, calls fail as Unavailable, to be retried."""

    def resolve():  # type: ignore[no-untyped-def]
        raise ConnectionError("metadata service timed out")

    source = CredentialSource(resolve, run_in_thread=inline)
    with pytest.raises(Unavailable, match="metadata service timed out"):
        result(source.get())


@pytest_twisted.ensureDeferred
async def test_refresh_runs_off_the_reactor_thread():
    """Expiring credentials are refreshed in a worker thread, never on the reactor."""
    threads: list[threading.Thread] = []

    def refresh() -> dict[str, str]:
        threads.append(threading.current_thread())
        # Valid, but inside botocore's refresh window: every get() refreshes.
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        return {
            "access_key": f"AK{len(threads)}",
            "secret_key": "secret",
            "token": "token",
            "expiry_time": soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def resolve() -> RefreshableCredentials:
        return RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")

    source = CredentialSource(resolve)
    first = await source.get()
    second = await source.get()
    assert len(threads) >= 3  # resolve, then a refresh for each get()
    assert all(t is not threading.main_thread() for t in threads)
    assert first.token == "token"
    assert first.access_key != second.access_key


# -- SQS ----------------------------------------------------------------------


def setup_queue(*replies, visibility=30):  # type: ignore[no-untyped-def]
    clock = task.Clock()
    clock.advance(1_000_000)
    script = Script(*replies)
    agent = ScriptedAgent(script)
    queue = SQSQueue(
        make_client(agent, clock), ENDPOINT, "http://q/1/jobs", visibility, clock, "http://q/1/dead"
    )
    return queue, script, agent, clock


def _json(doc: dict[str, Any], status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return (status, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(doc).encode())


MESSAGE = {
    "Messages": [
        {
            "MessageId": "m1",
            "ReceiptHandle": "handle-1",
            "Body": "job",
            "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000123"},
        }
    ]
}


def test_receive_uses_json_protocol_and_sqs_limits():
    """A receive is one AmazonSQS.ReceiveMessage with waits and batches capped to SQS's."""
    queue, script, agent, clock = setup_queue(_json(MESSAGE), visibility=45)
    d = queue.receive(max_messages=50, wait=60)
    settle(agent, clock, d, step=0)
    [msg] = result(d)
    [seen] = script.seen
    assert seen.headers["x-amz-target"] == "AmazonSQS.ReceiveMessage"
    assert seen.headers["content-type"] == "application/x-amz-json-1.0"
    sent = json.loads(seen.body)
    assert sent["QueueUrl"] == "http://q/1/jobs"
    assert sent["MaxNumberOfMessages"] == 10
    assert sent["WaitTimeSeconds"] == 20
    assert sent["VisibilityTimeout"] == 45
    assert "ApproximateReceiveCount" in sent["AttributeNames"]
    assert msg == Message("job", "handle-1", 2, 1700000000.123)


def test_short_receive_wait_is_one_long_poll_not_a_spin():
    """A 1 s wait asks SQS to wait 1 s once, even though the clock moves between
    reading the deadline and asking (it used to ask for 0 s, and return at once)."""

    class MovingClock(task.Clock):
        def seconds(self) -> float:
            self.rightNow += 0.0001  # every look at the clock takes a little time
            return self.rightNow

    queue, script, agent, _ = setup_queue(_json({}))
    clock = MovingClock()
    clock.rightNow = 1_000_000.0
    queue.clock = clock
    d = queue.receive(max_messages=1, wait=1)
    settle(agent, clock, d, step=0)
    assert result(d) == []
    [seen] = script.seen
    assert json.loads(seen.body)["WaitTimeSeconds"] == 1


def test_send_with_delay_rounds_up_to_whole_seconds():
    """A delayed send asks SQS for DelaySeconds, rounded up."""
    queue, script, agent, clock = setup_queue(_json({"MessageId": "m"}))
    d = queue.send("body", delay=1.2)
    settle(agent, clock, d, step=0)
    result(d)
    assert json.loads(script.seen[0].body)["DelaySeconds"] == 2


def test_extend_after_the_deadline_is_lost_without_asking():
    """Once the visibility timeout has passed on our clock, extend is LostClaim."""
    queue, script, agent, clock = setup_queue(_json(MESSAGE), visibility=30)
    d = queue.receive()
    settle(agent, clock, d, step=0)
    [msg] = result(d)
    clock.advance(31)
    with pytest.raises(LostClaim):
        result(queue.extend(msg, 60))
    assert len(script.seen) == 1


def test_extend_maps_an_invalid_receipt_handle_to_lost_claim():
    """SQS refusing the receipt handle means someone else may have the job."""
    refused = _json(
        {
            "__type": "com.amazonaws.sqs#InvalidParameterValue",
            "message": "Value handle-1 for parameter ReceiptHandle is invalid. Reason: "
            "Message does not exist or is not available for visibility timeout change.",
        },
        400,
    )
    queue, script, agent, clock = setup_queue(_json(MESSAGE), refused)
    d = queue.receive()
    settle(agent, clock, d, step=0)
    [msg] = result(d)
    d = queue.extend(msg, 60)
    settle(agent, clock, d, step=0)
    with pytest.raises(LostClaim):
        result(d)
    assert json.loads(script.seen[1].body)["VisibilityTimeout"] == 60


def test_release_and_ack_of_lost_claims_are_quiet():
    """Releasing or acking a delivery that is gone does not fail the worker."""
    gone = _json({"__type": "com.amazonaws.sqs#ReceiptHandleIsInvalid"}, 400)
    queue, script, agent, clock = setup_queue(_json(MESSAGE), gone, gone)
    d = queue.receive()
    settle(agent, clock, d, step=0)
    [msg] = result(d)
    d = queue.release(msg, delay=5)
    settle(agent, clock, d, step=0)
    result(d)
    d = queue.ack(msg)
    settle(agent, clock, d, step=0)
    result(d)
    assert json.loads(script.seen[1].body)["VisibilityTimeout"] == 5
    assert script.seen[2].headers["x-amz-target"] == "AmazonSQS.DeleteMessage"


def test_stats_reads_queue_and_dead_letter_counts():
    """stats asks GetQueueAttributes of the queue and of its dead-letter queue."""
    queue, script, agent, clock = setup_queue(
        _json(
            {
                "Attributes": {
                    "ApproximateNumberOfMessages": "3",
                    "ApproximateNumberOfMessagesNotVisible": "2",
                }
            }
        ),
        _json({"Attributes": {"ApproximateNumberOfMessages": "7"}}),
    )
    d = queue.stats()
    settle(agent, clock, d, step=0)
    stats = result(d)
    assert (stats.visible, stats.in_flight, stats.dead) == (3, 2, 7)
    assert json.loads(script.seen[1].body)["QueueUrl"] == "http://q/1/dead"
