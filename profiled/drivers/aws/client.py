"""A small non-blocking client for S3 and SQS: botocore signs, treq sends.

txAWS is Python 2 only and has no SQS, and botocore's own HTTP stack blocks,
so this module joins the two halves that are good: botocore for the
credential chain (with refresh), SigV4, endpoints and error codes; treq on
the reactor for the HTTP. Nothing here blocks the reactor: credential
look-ups and refreshes run in a thread, requests go through an injected
``HTTPClient``, and every wait (timeouts, backoff) is on an injected
``IReactorTime`` so that tests drive it with ``task.Clock``.

Errors come out as profiled's own exceptions: ``NotFound`` for a missing
object or queue message, ``Unavailable`` once retries are spent on server
errors, throttling and broken connections, ``AccessDenied`` for credentials
or permissions that are wrong (never retried: waiting will not fix them),
and ``AwsError`` for any other refusal.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any
from xml.etree import ElementTree

import attrs
import treq
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import NoCredentialsError, PartialCredentialsError
from botocore.loaders import create_loader
from botocore.regions import EndpointResolver
from treq.client import HTTPClient
from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import client as web_client
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from profiled.drivers.aws.signing import sign
from profiled.errors import NotFound, ProfiledError, Unavailable

log = Logger()

#: Error codes that mean "slow down", after botocore's standard retry mode.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "KmsThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
    }
)
#: Error codes of transient faults that come with a 4xx status.
TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "InternalError"})
#: Statuses worth another try (botocore's list, plus 429 Too Many Requests).
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Codes of a refusal that waiting will not fix: bad keys, signatures, permissions.
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "RequestTimeTooSkewed",
        "NoCredentials",
    }
)
#: Codes that name a missing object or queue (a missing bucket is a
#: configuration error, not a missing object, so NoSuchBucket is not here).
NOT_FOUND_CODES = frozenset(
    {
        "NoSuchKey",
        "NotFound",
        "404",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    }
)

#: Connection-level failures that a new attempt may get past.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    error.ConnectError,
    error.ConnectionLost,
    error.ConnectionClosed,
    error.DNSLookupError,
    error.TimeoutError,
    defer.TimeoutError,
    defer.CancelledError,
    web_client.ResponseNeverReceived,
    web_client.ResponseFailed,
    web_client.RequestTransmissionFailed,
    web_client.RequestNotSent,
    TimeoutError,
    ConnectionError,
)


class AwsError(ProfiledError):
    """S3 or SQS refused a request for a reason the caller must look at.

    ``code`` is the service's error code (``NoSuchBucket``,
    ``InvalidParameterValue``...), ``status`` the HTTP status.
    """

    def __init__(self, code: str, message: str = "", status: int = 0, request_id: str = "") -> None:
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        text = f"{code} (HTTP {status})" if status else code
        if message:
            text += f": {message}"
        if request_id:
            text += f" [request {request_id}]"
        super().__init__(text)


class AccessDenied(AwsError):
    """The credentials are missing, wrong, expired, or lack a permission.

    Never retried: it needs an operator, and the message says which call
    was refused so that the missing IAM permission can be found.
    """


class AwsNotFound(NotFound, AwsError):  # type: ignore[misc]
    """A missing object or queue: a NotFound that keeps the service's details."""


class AwsUnavailable(Unavailable, AwsError):  # type: ignore[misc]
    """Retries are spent on server errors or throttling: an Unavailable with details."""


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> AwsError:
    """Turn an error response (S3 XML, SQS JSON or query XML) into an exception."""
    code, message = "", ""
    request_id = headers.get("x-amz-request-id") or headers.get("x-amzn-requestid") or ""
    text = body.strip()
    if text.startswith(b"{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = {}
        if isinstance(doc, dict):
            code = str(doc.get("__type") or doc.get("code") or doc.get("Code") or "")
            code = code.rsplit("#", 1)[-1]
            message = str(doc.get("message") or doc.get("Message") or "")
    elif text.startswith(b"<"):
        try:
            root = ElementTree.fromstring(text)  # noqa: S314 - small error documents
        except ElementTree.ParseError:
            root = None
        if root is not None:
            for el in root.iter():
                tag = el.tag.rsplit("}", 1)[-1]
                if tag == "Code" and not code:
                    code = (el.text or "").strip()
                elif tag == "Message" and not message:
                    message = (el.text or "").strip()
                elif tag == "RequestId" and not request_id:
                    request_id = (el.text or "").strip()
    query_error = headers.get("x-amzn-query-error", "")
    if query_error and not code:
        code = query_error.split(";", 1)[0]
    if not code:
        code = {403: "AccessDenied", 404: "NotFound"}.get(status, str(status))
    if code in ACCESS_CODES or (status in (401, 403) and code not in THROTTLING_CODES):
        return AccessDenied(code, message, status, request_id)
    if code in NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
        return AwsNotFound(code, message, status, request_id)
    if is_transient(status, code):
        return AwsUnavailable(code, message, status, request_id)
    return AwsError(code, message, status, request_id)


def is_transient(status: int, code: str) -> bool:
    """Whether an error response is worth another try after a pause."""
    return status in TRANSIENT_STATUSES or code in THROTTLING_CODES or code in TRANSIENT_CODES


@attrs.frozen
class RetryPolicy:
    """Capped exponential backoff with full jitter.

    Attempt ``n`` (0-based) waits a uniform random time in
    ``[0, min(cap, base * 2**n)]`` before the next one: full jitter spreads
    the retries of many workers hit by the same outage, and the cap keeps
    one call from sleeping for minutes.
    """

    #: Attempts in all, the first one included.
    attempts: int = 5
    base: float = 0.1
    cap: float = 20.0
    #: A uniform random number in [0, 1); injected so tests are exact.
    random: Callable[[], float] = attrs.field(default=random.random, eq=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return self.random() * min(self.cap, self.base * (2**attempt))


class CredentialSource:
    """Credentials from botocore's standard chain, fetched and refreshed off the reactor.

    botocore may read files, call the instance metadata service or STS to
    find or refresh credentials, all blocking. So the chain is resolved in a
    thread, and so is every refresh; between refreshes the frozen copy is
    handed out at once. Concurrent callers share one look-up.
    """

    def __init__(
        self,
        resolve: Callable[[], Credentials | None],
        run_in_thread: Callable[..., Deferred[Any]] = deferToThread,
    ) -> None:
        self._resolve = resolve
        self._run_in_thread = run_in_thread
        self._credentials: Credentials | None = None
        self._frozen: ReadOnlyCredentials | None = None
        self._waiters: list[Deferred[ReadOnlyCredentials]] | None = None

    @classmethod
    def from_chain(cls) -> CredentialSource:
        """Environment, shared files, container and instance roles: botocore's chain."""
        import botocore.session

        return cls(lambda: botocore.session.get_session().get_credentials())

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> CredentialSource:
        """Fixed credentials (tests, tools that already hold a key)."""
        creds = Credentials(access_key, secret_key, token)
        return cls(lambda: creds)

    def _stale(self) -> bool:
        creds = self._credentials
        if self._frozen is None:
            return True
        return isinstance(creds, RefreshableCredentials) and creds.refresh_needed()

    def _load(self) -> ReadOnlyCredentials:
        """Runs in a thread: resolve the chain once, then refresh as needed.

        A chain that is misconfigured is ``AccessDenied`` (an operator must
        act); one that fails to answer (the metadata service, STS) is
        ``Unavailable`` (the next call tries again).
        """
        try:
            return self._load_or_refresh()
        except (AccessDenied, NoCredentialsError, PartialCredentialsError) as e:
            if isinstance(e, AccessDenied):
                raise
            raise AccessDenied("NoCredentials", str(e)) from e
        except Exception as e:
            raise Unavailable(f"AWS credentials could not be fetched: {e}") from e

    def _load_or_refresh(self) -> ReadOnlyCredentials:
        if self._credentials is None:
            creds = self._resolve()
            if creds is None:
                raise AccessDenied(
                    "NoCredentials",
                    "no AWS credentials in the standard chain (environment, "
                    "shared credentials file, container or instance role)",
                )
            self._credentials = creds
        return self._credentials.get_frozen_credentials()

    def get(self) -> Deferred[ReadOnlyCredentials]:
        """The current credentials, refreshed first if they are about to expire."""
        if not self._stale():
            assert self._frozen is not None
            return defer.succeed(self._frozen)
        waiter: Deferred[ReadOnlyCredentials] = Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        d = self._run_in_thread(self._load)
        d.addBoth(self._loaded)
        return waiter

    def _loaded(self, result: Any) -> None:
        waiters, self._waiters = self._waiters or [], None
        if isinstance(result, ReadOnlyCredentials):
            self._frozen = result
        for w in waiters:
            w.callback(result) if isinstance(result, ReadOnlyCredentials) else w.errback(result)


def default_endpoint(service: str, region: str) -> str:
    """The AWS endpoint of ``service`` in ``region``, from botocore's endpoint data."""
    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    found = resolver.construct_endpoint(service, region)
    hostname = found["hostname"] if found else f"{service}.{region}.amazonaws.com"
    return f"https://{hostname}"


def make_http_client(reactor: Any, max_per_host: int = 16) -> HTTPClient:
    """A treq client on a persistent connection pool (S3 and SQS keep connections alive)."""
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = 30
    return HTTPClient(web_client.Agent(reactor, pool=pool))


def _headers_dict(response: IResponse) -> dict[str, str]:
    """Lower-cased response headers, Content-Length included.

    Twisted takes Content-Length out of the headers of a response with a
    body (it frames the body); put it back from ``response.length``.
    """
    headers = {
        k.decode("latin-1").lower(): b",".join(v).decode("latin-1")
        for k, v in response.headers.getAllRawHeaders()
    }
    if isinstance(response.length, int) and "content-length" not in headers:
        headers["content-length"] = str(response.length)
    return headers


class SourceError(ValueError):
    """The body source of a PUT failed or ended early: the caller's fault, not S3's."""


def _source_error(failure_value: BaseException) -> BaseException | None:
    """The caller's own error hidden inside a failed request, if any."""
    reasons = getattr(failure_value, "reasons", None) or []
    for reason in reasons:
        value = getattr(reason, "value", None)
        if isinstance(value, ValueError):
            return value
    return None


@implementer(IBodyProducer)
class _BytesProducer:
    """A small in-memory body (SQS JSON, bucket configuration), written in one go.

    treq would wrap bytes in a FileBodyProducer on the global cooperator;
    writing at once is simpler and keeps the client on its injected clock.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@attrs.define
class Response:
    """A successful answer: status, lower-cased headers, and the body or the stream."""

    status: int
    headers: dict[str, str]
    #: The whole body, unless the request asked to stream it.
    body: bytes
    #: The unread response when streaming (deliverBody it, or close it).
    raw: IResponse | None = None


class AwsClient:
    """Signs and sends requests to S3 and SQS, retrying what is worth retrying."""

    def __init__(
        self,
        credentials: CredentialSource,
        region: str,
        http: HTTPClient,
        clock: IReactorTime,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.http = http
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.timeout = timeout

    async def request(
        self,
        service: str,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        producer: Callable[[], IBodyProducer] | None = None,
        payload_hash: str | None = None,
        stream: bool = False,
        extra_timeout: float = 0.0,
        retryable: bool = True,
    ) -> Response:
        """Send one signed request and return its 2xx/3xx answer.

        ``producer`` makes a fresh body producer for each attempt (a streamed
        PUT); otherwise ``body`` is sent. With ``stream`` the body of a
        successful answer is left unread in ``Response.raw``. Each attempt
        is abandoned after ``timeout + extra_timeout`` seconds (long polls
        add their wait). Transient failures are retried per the policy and
        end in ``Unavailable``; other errors are raised at once.
        """
        attempts = self.retry.attempts if retryable else 1
        last: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                pause = self.retry.delay(attempt - 1)
                log.debug(
                    "retrying {method} {url} in {pause:.2f}s after {error}",
                    method=method,
                    url=url,
                    pause=pause,
                    error=last,
                )
                await deferLater(self.clock, pause, lambda: None)
            try:
                return await self._attempt(
                    service,
                    method,
                    url,
                    headers or {},
                    body,
                    producer,
                    payload_hash,
                    stream,
                    self.timeout + extra_timeout,
                )
            except Exception as e:
                inner = _source_error(e)
                if inner is not None:
                    raise SourceError(str(inner)) from inner
                if not isinstance(e, (AwsUnavailable, *TRANSIENT_EXCEPTIONS)):
                    raise
                last = e
        if isinstance(last, AwsUnavailable):
            raise last
        raise Unavailable(
            f"{service} {method} {url}: {type(last).__name__}: {last} "
            f"(after {attempts} attempt{'s' if attempts > 1 else ''})"
        ) from last

    async def _attempt(
        self,
        service: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        producer: Callable[[], IBodyProducer] | None,
        payload_hash: str | None,
        stream: bool,
        timeout: float,
    ) -> Response:
        creds = await self.credentials.get()
        signed = sign(
            creds,
            service,
            self.region,
            method,
            url,
            headers,
            now=self.clock.seconds(),
            body=b"" if producer is not None else body,
            payload_hash=payload_hash,
        )
        data: Any = producer() if producer is not None else (_BytesProducer(body) if body else None)
        d = self.http.request(
            method,
            url,
            headers=dict[bytes | str, bytes | str](signed.headers.items()),
            data=data,
            allow_redirects=False,
            unbuffered=True,
        )
        d.addTimeout(timeout, self.clock)
        response = await d
        status = response.code
        if status < 300 or status == 304:
            if stream:
                return Response(status, _headers_dict(response), b"", response)
            content = await treq.content(response).addTimeout(timeout, self.clock)
            return Response(status, _headers_dict(response), content)
        content = b""
        if method != "HEAD":
            content = await treq.content(response).addTimeout(timeout, self.clock)
        raise parse_error(status, _headers_dict(response), content)
