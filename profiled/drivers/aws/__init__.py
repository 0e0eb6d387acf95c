"""The ``aws`` driver: the store seam over S3, the queue seam over SQS.

Works against AWS itself (``aws.endpoint_url`` empty: botocore's endpoint
data picks the regional endpoint) or any S3/SQS-compatible service
(``aws.endpoint_url`` set). Credentials come only from botocore's standard
chain, never from profiled's configuration.
"""

from __future__ import annotations

from typing import Any

from profiled.config import Settings
from profiled.drivers import Drivers
from profiled.drivers.aws.client import (
    AwsClient,
    CredentialSource,
    RetryPolicy,
    default_endpoint,
    make_http_client,
)
from profiled.drivers.aws.s3 import S3Store
from profiled.drivers.aws.sqs import SQSQueue
from profiled.errors import ConfigError


def endpoints(settings: Settings) -> tuple[str, str]:
    """The S3 and SQS base URLs ``settings`` lead to."""
    aws = settings.aws
    if aws.endpoint_url:
        return aws.endpoint_url, aws.endpoint_url
    return default_endpoint("s3", aws.region), default_endpoint("sqs", aws.region)


def build_client(
    settings: Settings,
    reactor: Any,
    credentials: CredentialSource | None = None,
) -> AwsClient:
    """One client (one connection pool, one credential cache) for S3 and SQS."""
    aws = settings.aws
    return AwsClient(
        credentials or CredentialSource.from_chain(),
        aws.region,
        make_http_client(reactor),
        reactor,
        RetryPolicy(attempts=aws.max_retries),
        timeout=aws.timeout,
    )


def build_aws(
    settings: Settings, reactor: Any, credentials: CredentialSource | None = None
) -> Drivers:
    """The private and public S3 stores and the SQS queue of ``settings``."""
    aws = settings.aws
    if not aws.queue_url:
        raise ConfigError(
            "aws.queue_url: required with the aws driver (profiled-admin setup-aws prints it)"
        )
    client = build_client(settings, reactor, credentials)
    s3_endpoint, sqs_endpoint = endpoints(settings)
    return Drivers(
        private=S3Store(client, s3_endpoint, aws.private_bucket),
        public=S3Store(client, s3_endpoint, aws.public_bucket),
        queue=SQSQueue(
            client,
            sqs_endpoint,
            aws.queue_url,
            settings.worker.visibility_timeout,
            reactor,
            dead_letter_queue_url=aws.dead_letter_queue_url,
        ),
    )
