"""Contract-suite factories for the aws driver: S3 on moto and SeaweedFS, SQS on moto.

Each store gets a fresh bucket and each queue a fresh queue with its own
dead-letter queue and redrive policy, on the session's servers, so tests
never see each other's objects or messages.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from twisted.internet import reactor

from profiled.drivers.aws.s3 import S3Store
from profiled.drivers.aws.sqs import SQSQueue, create_queue
from profiled.interfaces import IQueue, IStore
from tests.aws_servers import AwsServer


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def s3_store(tmp_path: Path, server: AwsServer):
    """Fresh buckets on ``server``."""

    async def make() -> IStore:
        store = S3Store(server.client(), server.endpoint, _name("contract"))
        await store.create_bucket()
        return store

    return make


def sqs_queue(tmp_path: Path, server: AwsServer):
    """Fresh queues (with a dead-letter queue after ``max_receives``) on ``server``."""

    async def make(visibility_timeout: int, max_receives: int) -> IQueue:
        client = server.client()
        name = _name("contract")
        dead_url, dead_arn = await create_queue(client, server.endpoint, f"{name}-dead")
        url, _ = await create_queue(
            client,
            server.endpoint,
            name,
            {
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receives)}
                ),
            },
        )
        return SQSQueue(
            client,
            server.endpoint,
            url,
            visibility_timeout,
            reactor,
            dead_letter_queue_url=dead_url,
        )

    return make
