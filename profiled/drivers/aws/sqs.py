"""The queue seam over SQS (or any SQS-compatible service), JSON protocol.

Each call is a POST to the service endpoint with ``X-Amz-Target:
AmazonSQS.<Action>`` and a JSON body. Dead-lettering is the queue's own
redrive policy (``maxReceiveCount`` = ``worker.max_attempts``), set up by
``profiled-admin setup-aws``: SQS moves a message that was received that
many times to the dead-letter queue by itself.

Visibility timeouts are whole seconds in SQS: fractions are rounded up, so
a claim is never shorter than asked. A claim is also tracked here, on the
injected clock, from the moment the receive was *sent*: once that deadline
has passed the delivery counts as lost even if SQS would still take its
receipt handle (after a redelivery an old handle may still be accepted by
some implementations), so ``extend`` never revives a job someone else has.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from profiled.drivers.aws.client import AwsClient, AwsError
from profiled.errors import ConfigError, LostClaim
from profiled.interfaces import IQueue, Message, QueueStats

log = Logger()

#: SQS limits.
MAX_WAIT = 20
MAX_BATCH = 10
MAX_VISIBILITY = 43200
MAX_DELAY = 900

#: Error codes SQS gives for a receipt handle that no longer names a claim.
LOST_CLAIM_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidReceiptHandle",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)


def is_lost_claim(e: AwsError) -> bool:
    """Whether SQS refused a receipt handle because the claim is gone.

    AWS says ``InvalidParameterValue`` with a message about the receipt
    handle for an expired claim; the same code also covers bad timeouts,
    which are not a lost claim.
    """
    if e.code in LOST_CLAIM_CODES:
        return True
    return e.code == "InvalidParameterValue" and "receipt" in e.message.lower()


def _seconds(value: float, limit: int) -> int:
    """Whole seconds for SQS, rounded up and clamped to [0, limit]."""
    return max(0, min(limit, math.ceil(value)))


@implementer(IQueue)
class SQSQueue:
    """One SQS queue (and optionally its dead-letter queue, for stats) as an IQueue."""

    def __init__(
        self,
        client: AwsClient,
        endpoint: str,
        queue_url: str,
        visibility_timeout: int,
        clock: IReactorTime,
        dead_letter_queue_url: str = "",
    ) -> None:
        self.client = client
        self.endpoint = endpoint.rstrip("/") + "/"
        self.queue_url = queue_url
        self.visibility_timeout = _seconds(visibility_timeout, MAX_VISIBILITY)
        self.clock = clock
        self.dead_letter_queue_url = dead_letter_queue_url
        #: receipt handle -> clock time when our claim surely ends.
        self._deadlines: dict[str, float] = {}

    async def call(self, action: str, payload: dict[str, Any], wait: int = 0) -> dict[str, Any]:
        """Send one SQS JSON-protocol action and return the decoded answer."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        response = await self.client.request(
            "sqs",
            "POST",
            self.endpoint,
            {
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"AmazonSQS.{action}",
            },
            body=body,
            extra_timeout=wait,
        )
        if not response.body.strip():
            return {}
        result = json.loads(response.body)
        return result if isinstance(result, dict) else {}

    def send(self, body: str, delay: float = 0) -> Deferred[None]:
        return Deferred.fromCoroutine(self._send(body, delay))

    async def _send(self, body: str, delay: float) -> None:
        payload: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": body}
        if delay > 0:
            payload["DelaySeconds"] = _seconds(delay, MAX_DELAY)
        await self.call("SendMessage", payload)

    def receive(self, max_messages: int = 1, wait: float = 0) -> Deferred[list[Message]]:
        return Deferred.fromCoroutine(self._receive(max_messages, wait))

    async def _receive(self, max_messages: int, wait: float) -> list[Message]:
        deadline = self.clock.seconds() + max(0.0, wait)
        while True:
            remaining = deadline - self.clock.seconds()
            # Whole seconds only, rounded up: the clock has moved since the
            # deadline was set, and rounding 0.9999 s down to a 0 s poll made
            # a worker with a 1 s wait spin on empty receives.
            poll = max(0, min(MAX_WAIT, math.ceil(remaining)))
            messages = await self._receive_once(max_messages, poll)
            if messages or self.clock.seconds() + 1 > deadline:
                return messages

    async def _receive_once(self, max_messages: int, wait: int) -> list[Message]:
        sent = self.clock.seconds()
        names = ["ApproximateReceiveCount", "SentTimestamp"]
        result = await self.call(
            "ReceiveMessage",
            {
                "QueueUrl": self.queue_url,
                "MaxNumberOfMessages": max(1, min(MAX_BATCH, max_messages)),
                "WaitTimeSeconds": wait,
                "VisibilityTimeout": self.visibility_timeout,
                "AttributeNames": names,
                "MessageSystemAttributeNames": names,
            },
            wait=wait,
        )
        out = []
        for raw in result.get("Messages") or []:
            attributes = raw.get("Attributes") or {}
            handle = raw["ReceiptHandle"]
            self._deadlines[handle] = sent + self.visibility_timeout
            out.append(
                Message(
                    body=raw.get("Body", ""),
                    handle=handle,
                    receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                    sent_at=int(attributes.get("SentTimestamp", 0)) / 1000.0,
                )
            )
        return out

    def _claim_alive(self, message: Message) -> bool:
        deadline = self._deadlines.get(message.handle)
        return deadline is None or self.clock.seconds() < deadline

    def ack(self, message: Message) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ack(message))

    async def _ack(self, message: Message) -> None:
        self._deadlines.pop(message.handle, None)
        try:
            await self.call(
                "DeleteMessage", {"QueueUrl": self.queue_url, "ReceiptHandle": message.handle}
            )
        except AwsError as e:
            if not is_lost_claim(e):
                raise
            # Already gone or redelivered: the redelivery will be acked by
            # whoever has it, and the work is idempotent.
            log.info("ack of a lost claim ignored: {error}", error=e)

    def release(self, message: Message, delay: float = 0) -> Deferred[None]:
        return Deferred.fromCoroutine(self._release(message, delay))

    async def _release(self, message: Message, delay: float) -> None:
        alive = self._claim_alive(message)
        self._deadlines.pop(message.handle, None)
        if not alive:
            return  # it is visible again already; nothing to give back
        try:
            await self._change_visibility(message, _seconds(delay, MAX_VISIBILITY))
        except LostClaim:
            pass

    def extend(self, message: Message, timeout: float) -> Deferred[Message]:
        return Deferred.fromCoroutine(self._extend(message, timeout))

    async def _extend(self, message: Message, timeout: float) -> Message:
        if not self._claim_alive(message):
            self._deadlines.pop(message.handle, None)
            raise LostClaim(f"visibility of {message.handle[:16]}... ran out")
        sent = self.clock.seconds()
        seconds = _seconds(timeout, MAX_VISIBILITY)
        try:
            await self._change_visibility(message, seconds)
        except LostClaim:
            self._deadlines.pop(message.handle, None)
            raise
        self._deadlines[message.handle] = sent + seconds
        return message

    async def _change_visibility(self, message: Message, seconds: int) -> None:
        try:
            await self.call(
                "ChangeMessageVisibility",
                {
                    "QueueUrl": self.queue_url,
                    "ReceiptHandle": message.handle,
                    "VisibilityTimeout": seconds,
                },
            )
        except AwsError as e:
            if is_lost_claim(e):
                raise LostClaim(str(e)) from e
            raise

    async def _attributes(self, queue_url: str, names: list[str]) -> dict[str, str]:
        result = await self.call(
            "GetQueueAttributes", {"QueueUrl": queue_url, "AttributeNames": names}
        )
        return result.get("Attributes") or {}

    def stats(self) -> Deferred[QueueStats]:
        return Deferred.fromCoroutine(self._stats())

    async def _stats(self) -> QueueStats:
        attrs = await self._attributes(
            self.queue_url,
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        dead = 0
        if self.dead_letter_queue_url:
            dlq = await self._attributes(
                self.dead_letter_queue_url, ["ApproximateNumberOfMessages"]
            )
            dead = int(dlq.get("ApproximateNumberOfMessages", 0))
        return QueueStats(
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            dead=dead,
            # SQS only tells the age of the oldest message through CloudWatch.
            oldest_age=None,
        )

    def ping(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ping())

    async def _ping(self) -> None:
        await self._attributes(self.queue_url, ["QueueArn"])

    # -- dead letters (the admin command) ------------------------------------

    def _dead_letter_url(self) -> str:
        if not self.dead_letter_queue_url:
            raise ConfigError(
                "aws.dead_letter_queue_url: needed to look at dead letters "
                "(profiled-admin setup-aws prints it)"
            )
        return self.dead_letter_queue_url

    async def _scan_dead(self) -> list[dict[str, Any]]:
        """Receive every dead letter once (hidden for a while); stop at the first repeat."""
        dead_url = self._dead_letter_url()
        seen: dict[str, dict[str, Any]] = {}
        while True:
            result = await self.call(
                "ReceiveMessage",
                {
                    "QueueUrl": dead_url,
                    "MaxNumberOfMessages": MAX_BATCH,
                    # A short long-poll asks every SQS server, not a sample.
                    "WaitTimeSeconds": 1,
                    "VisibilityTimeout": 60,
                    "AttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
                },
                wait=1,
            )
            batch = result.get("Messages") or []
            fresh = [m for m in batch if m["MessageId"] not in seen]
            for m in fresh:
                seen[m["MessageId"]] = m
            if not fresh:
                return list(seen.values())

    async def _unhide(self, url: str, handles: list[str]) -> None:
        for handle in handles:
            try:
                await self.call(
                    "ChangeMessageVisibility",
                    {"QueueUrl": url, "ReceiptHandle": handle, "VisibilityTimeout": 0},
                )
            except AwsError as e:
                log.warn("could not unhide a dead letter: {error}", error=e)

    def list_dead(self) -> Deferred[list[dict[str, Any]]]:
        """The dead letters, oldest first: msgid, body, receive_count, sent_at, dead_at.

        SQS has no way to peek: each message is received and made visible
        again at once. ``receive_count`` leaves out this look's own receive;
        ``dead_at`` is None (SQS does not say when it moved a message).
        """
        return Deferred.fromCoroutine(self._list_dead())

    async def _list_dead(self) -> list[dict[str, Any]]:
        raw = await self._scan_dead()
        await self._unhide(self._dead_letter_url(), [m["ReceiptHandle"] for m in raw])
        out = []
        for m in raw:
            attributes = m.get("Attributes") or {}
            out.append(
                {
                    "msgid": m["MessageId"],
                    "body": m.get("Body"),
                    "receive_count": max(0, int(attributes.get("ApproximateReceiveCount", 1)) - 1),
                    "sent_at": int(attributes.get("SentTimestamp", 0)) / 1000.0,
                    "dead_at": None,
                }
            )
        return sorted(out, key=lambda d: d["sent_at"])

    def redrive_dead(self, msgid: str | None = None) -> Deferred[int]:
        """Send dead letters (all, or the one ``msgid``) back to the queue; return the count.

        Each is sent anew (its receive count starts again) and only then
        deleted from the dead-letter queue: a crash in between duplicates a
        job, which the worker's idempotence makes harmless, and never loses one.
        """
        return Deferred.fromCoroutine(self._redrive_dead(msgid))

    async def _redrive_dead(self, msgid: str | None) -> int:
        dead_url = self._dead_letter_url()
        raw = await self._scan_dead()
        keep = [m["ReceiptHandle"] for m in raw if msgid is not None and m["MessageId"] != msgid]
        moved = 0
        try:
            for m in raw:
                if msgid is not None and m["MessageId"] != msgid:
                    continue
                await self.call(
                    "SendMessage", {"QueueUrl": self.queue_url, "MessageBody": m["Body"]}
                )
                await self.call(
                    "DeleteMessage", {"QueueUrl": dead_url, "ReceiptHandle": m["ReceiptHandle"]}
                )
                moved += 1
        finally:
            await self._unhide(dead_url, keep)
        return moved


async def create_queue(
    client: AwsClient, endpoint: str, name: str, attributes: dict[str, str] | None = None
) -> tuple[str, str]:
    """Create (or find) queue ``name`` and set ``attributes``; return its URL and ARN.

    CreateQueue refuses an existing queue whose attributes differ, so the
    queue is created bare and its attributes are set afterwards: running
    this twice converges instead of failing.
    """
    bare = SQSQueue(client, endpoint, "", 30, client.clock)
    created = await bare.call("CreateQueue", {"QueueName": name})
    url = created["QueueUrl"]
    if attributes:
        await bare.call("SetQueueAttributes", {"QueueUrl": url, "Attributes": attributes})
    found = await bare.call("GetQueueAttributes", {"QueueUrl": url, "AttributeNames": ["QueueArn"]})
    return url, found["Attributes"]["QueueArn"]
