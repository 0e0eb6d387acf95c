"""Faults with the aws driver: the session's moto (signatures enforced) behind a ChaosProxy.

The roles talk to S3 and SQS through a proxy that forwards every call to
moto unchanged, until a test makes it fail the calls of one bucket or of the
queue with a 503 or a dropped connection. Checks are made on moto itself,
around the proxy: nothing stored, nothing queued, no orphan.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests import images
from tests.aws_servers import AwsServer, free_port
from tests.e2e.harness import Twistd, running, upload, wait_until
from tests.e2e.test_aws_e2e import setup_aws
from tests.faults.chaos import ChaosProxy, Tally
from tests.faults.test_faults_local import FAST, status_of, upload_many

pytestmark = [pytest.mark.e2e, pytest.mark.aws]

QUICK_AWS = {"PROFILED_AWS_MAX_RETRIES": "2", "PROFILED_AWS_TIMEOUT": "5"}


def objects(moto: AwsServer, bucket: str, prefix: str = "") -> list[str]:
    listing = moto.botocore("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def queue_depth(moto: AwsServer, env: dict[str, str]) -> int:
    attributes = moto.botocore("sqs").get_queue_attributes(
        QueueUrl=env["PROFILED_AWS_QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def through(proxy: ChaosProxy, env: dict[str, str]) -> dict[str, str]:
    return {**env, **QUICK_AWS, "PROFILED_AWS_ENDPOINT_URL": proxy.endpoint}


@pytest.mark.parametrize("action", ["503", "drop"])
def test_private_store_down_is_503_and_leaves_nothing(
    moto_server: AwsServer, tmp_path: Path, action: str
):
    """S3 failing for the private bucket: 503, no original, nothing queued; then it works."""
    env = setup_aws(moto_server, tmp_path)
    with ChaosProxy(moto_server.endpoint) as proxy:
        web = Twistd(["--role=web", "--driver=aws"], tmp_path, through(proxy, env), name="web")
        with running(web):
            proxy.fail(action, "s3", bucket=env["PROFILED_AWS_PRIVATE_BUCKET"])
            r = upload(web, images.jpeg())
            assert r.status_code == 503, r.text
            assert r.json()["errno"] == 201 and r.headers["Retry-After"]
            assert proxy.faults >= 1
            proxy.heal()
            assert upload(web, images.jpeg()).status_code == 202
    assert len(objects(moto_server, env["PROFILED_AWS_PRIVATE_BUCKET"], "originals/")) == 1
    assert queue_depth(moto_server, env) == 1


def test_endpoint_down_is_503(moto_server: AwsServer, tmp_path: Path):
    """S3 and SQS unreachable (a closed port): uploads get 503, the heartbeat says 503."""
    env = {**setup_aws(moto_server, tmp_path), **QUICK_AWS}
    env["PROFILED_AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    web = Twistd(["--role=web", "--driver=aws"], tmp_path, env, name="web")
    with running(web):
        r = upload(web, images.jpeg())
        assert r.status_code == 503, r.text
        assert web.get("/__heartbeat__").status_code == 503
    assert objects(moto_server, env["PROFILED_AWS_PRIVATE_BUCKET"]) == []
    assert queue_depth(moto_server, env) == 0


def test_queue_down_after_store_is_503_without_orphan(moto_server: AwsServer, tmp_path: Path):
    """SQS failing after the original is in S3: 503, and the original is removed again."""
    env = setup_aws(moto_server, tmp_path)
    with ChaosProxy(moto_server.endpoint) as proxy:
        web = Twistd(["--role=web", "--driver=aws"], tmp_path, through(proxy, env), name="web")
        with running(web):
            proxy.fail("drop", "sqs")
            r = upload(web, images.jpeg())
            assert r.status_code == 503, r.text
            proxy.heal()
    assert objects(moto_server, env["PROFILED_AWS_PRIVATE_BUCKET"]) == []
    assert queue_depth(moto_server, env) == 0


def test_public_store_failing_then_back_every_image_ends_ready(
    moto_server: AwsServer, tmp_path: Path
):
    """PUTs to the public bucket fail for a while: jobs retry and all end ready afterwards."""
    env = setup_aws(moto_server, tmp_path)
    tally = Tally()
    with ChaosProxy(moto_server.endpoint) as proxy:
        roles_env = {**through(proxy, env), **FAST}
        web = Twistd(["--role=web", "--driver=aws"], tmp_path, roles_env, name="web")
        worker = Twistd(["--role=worker", "--driver=aws"], tmp_path, roles_env, name="worker")
        with running(web, worker):
            proxy.fail("503", "s3", method="PUT", bucket=env["PROFILED_AWS_PUBLIC_BUCKET"])
            upload_many(web, tally, 5)
            assert len(tally.accepted) == 5
            wait_until(lambda: proxy.faults >= 10, 30, what="failed variant writes")
            assert all(status_of(web)(i)["status"] == "pending" for i in tally.accepted)
            proxy.heal()
            tally.settle(status_of(web), 60)
    tally.assert_none_lost(want=("ready",))


def test_worker_sigkilled_mid_crunch_loses_nothing(moto_server: AwsServer, tmp_path: Path):
    """A worker SIGKILLed holding jobs: after their visibility timeout a new one ends them all."""
    env = {**setup_aws(moto_server, tmp_path), **FAST}
    tally = Tally()
    web = Twistd(["--role=web", "--driver=aws"], tmp_path, env, name="web")
    slow = Twistd(
        ["--role=worker", "--driver=aws"],
        tmp_path,
        name="slow-worker",
        env={**env, "PROFILED_CRUNCH_TEST_HOOKS": "1", "PROFILED_CRUNCH_TEST_DELAY": "30"},
    )
    with running(web, slow):
        upload_many(web, tally, 5)
        sqs = moto_server.botocore("sqs")

        def in_flight() -> int:
            return int(
                sqs.get_queue_attributes(
                    QueueUrl=env["PROFILED_AWS_QUEUE_URL"],
                    AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
            )

        wait_until(in_flight, 20, what="jobs to be received")
        assert slow.proc is not None
        os.killpg(slow.proc.pid, signal.SIGKILL)
        slow.proc.wait(10)
        fresh = Twistd(["--role=worker", "--driver=aws"], tmp_path, env, name="fresh-worker")
        with running(fresh):
            tally.settle(status_of(web), 90)
    tally.assert_none_lost(want=("ready",))
    assert len(tally.accepted) == 5
