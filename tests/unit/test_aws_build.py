"""build_aws: what --driver aws builds from the settings."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from profiled.config import load_settings
from profiled.drivers.aws import build_aws, endpoints
from profiled.drivers.aws.client import CredentialSource
from profiled.errors import ConfigError
from profiled.interfaces import IQueue, IStore


def settings(**overrides):  # type: ignore[no-untyped-def]
    return load_settings(environ={}, overrides=overrides)


def test_aws_endpoints_come_from_botocore_for_the_region():
    """With no endpoint_url, S3 and SQS are AWS's regional endpoints."""
    s3, sqs = endpoints(settings(**{"aws.region": "eu-west-1"}))
    assert s3 == "https://s3.eu-west-1.amazonaws.com"
    assert sqs == "https://sqs.eu-west-1.amazonaws.com"


def test_endpoint_url_serves_both_services():
    """A compatible service's endpoint_url is used for S3 and SQS alike."""
    assert endpoints(settings(**{"aws.endpoint_url": "http://127.0.0.1:4566"})) == (
        "http://127.0.0.1:4566",
        "http://127.0.0.1:4566",
    )


def test_build_aws_makes_two_buckets_and_a_queue():
    """The drivers provide the seams, on the configured buckets and queue."""
    s = settings(
        **{
            "aws.endpoint_url": "http://127.0.0.1:4566",
            "aws.queue_url": "http://127.0.0.1:4566/123/jobs",
            "aws.dead_letter_queue_url": "http://127.0.0.1:4566/123/jobs-dead",
            "aws.private_bucket": "priv",
            "aws.public_bucket": "pub",
            "worker.visibility_timeout": 90,
        }
    )
    drivers = build_aws(s, Clock(), CredentialSource.static("a", "b"))
    assert verifyObject(IStore, drivers.private) and verifyObject(IStore, drivers.public)
    assert verifyObject(IQueue, drivers.queue)
    assert (drivers.private.bucket, drivers.public.bucket) == ("priv", "pub")
    assert drivers.queue.visibility_timeout == 90
    assert drivers.queue.dead_letter_queue_url.endswith("/jobs-dead")


def test_build_aws_needs_a_queue_url():
    """Without aws.queue_url the aws driver refuses to start, naming the key."""
    with pytest.raises(ConfigError, match=r"^aws\.queue_url"):
        build_aws(settings(), Clock())
