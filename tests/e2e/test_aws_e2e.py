"""The whole pipeline on the aws driver: three twistd processes, S3 and SQS on moto.

Each test runs ``profiled-admin setup-aws`` as an operator would (fresh
buckets and queues per test), then starts the roles with ``--driver aws``
and the moto IAM key in their environment; moto checks every signature.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.aws_servers import AwsServer
from tests.e2e.harness import REPO, Twistd, running, upload, wait_for_status, wait_until
from tests.e2e.photos import looks_upright, sideways_jpeg

pytestmark = pytest.mark.aws

FAST_WORKER = {"PROFILED_WORKER_POLL_WAIT": "1", "PROFILED_WORKER_CONCURRENCY": "2"}
BOXES = {"default": 200, "small": 100, "large": 600}


def setup_aws(server: AwsServer, tmp_path: Path) -> dict[str, str]:
    """Fresh buckets and queues through the admin command; the env the roles need."""
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    env = {
        **server.env(),
        "PROFILED_DRIVER_NAME": "aws",
        "PROFILED_AWS_PRIVATE_BUCKET": f"{name}-private",
        "PROFILED_AWS_PUBLIC_BUCKET": f"{name}-public",
    }
    done = subprocess.run(
        [sys.executable, "-m", "profiled.admin", "setup-aws", "--queue-name", name],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for key, url in re.findall(r'^(queue_url|dead_letter_queue_url) = "(.*)"$', done.stdout, re.M):
        env[f"PROFILED_AWS_{key.upper()}"] = url
    return env


def roles(tmp_path: Path, env: dict[str, str], workers: int = 1) -> list[Twistd]:
    """A proxy, a web head pointing its URLs at the proxy, and ``workers`` workers."""
    proxy = Twistd(["--role=proxy", "--driver=aws"], tmp_path, env, name="proxy")
    web = Twistd(
        ["--role=web", "--driver=aws"],
        tmp_path,
        {**env, "PROFILED_WEB_IMAGE_URL": f"{proxy.url}/a/{{id}}"},
        name="web",
    )
    return [proxy, web] + [
        Twistd(["--role=worker", "--driver=aws"], tmp_path, {**env, **FAST_WORKER}, f"worker{i}")
        for i in range(workers)
    ]


def assert_served(status: dict[str, object]) -> None:
    """Every variant is served by the proxy, upright and within its box."""
    variants = status["variants"]
    assert isinstance(variants, dict) and set(variants) == set(BOXES)
    for name, box in BOXES.items():
        r = requests.get(variants[name], timeout=10)
        assert r.status_code == 200, (name, r.status_code)
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["Content-Length"] == str(len(r.content))
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        w, h = looks_upright(r.content)
        assert max(w, h) == min(box, 400)


def test_upload_ready_served_and_deleted(moto_server: AwsServer, tmp_path: Path):
    """web, worker and proxy as three processes on S3/SQS: upload, ready, served, deleted."""
    env = setup_aws(moto_server, tmp_path)
    proxy, web, worker = roles(tmp_path, env)
    with running(proxy, web, worker):
        r = upload(web, sideways_jpeg())
        assert r.status_code == 202, r.text
        image_id = r.json()["id"]
        status = wait_for_status(web, image_id)
        assert status["status"] == "ready", status
        assert_served(status)
        etag = requests.get(status["url"], timeout=10).headers["ETag"]
        again = requests.get(status["url"], headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304
        for p in (proxy, web, worker):
            assert p.get("/__heartbeat__").status_code == 200, p.name
        assert web.delete(f"/v1/images/{image_id}").status_code == 204
        for url in status["variants"].values():
            assert requests.get(url, timeout=10).status_code == 404
        assert web.get(f"/v1/images/{image_id}").status_code == 404


def test_two_workers_share_the_queue(moto_server: AwsServer, tmp_path: Path):
    """Two workers on one queue: every image ends ready with correct variants."""
    env = setup_aws(moto_server, tmp_path)
    proxy, web, *workers = roles(tmp_path, env, workers=2)
    with running(proxy, web, *workers):
        ids = []
        for _ in range(8):
            r = upload(web, sideways_jpeg())
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for image_id in ids:
            status = wait_for_status(web, image_id, timeout=90)
            assert status["status"] == "ready", status
            assert_served(status)


def test_worker_killed_mid_job_loses_nothing(moto_server: AwsServer, tmp_path: Path):
    """A worker SIGKILLed mid-crunch: the job reappears after its visibility timeout."""
    env = {**setup_aws(moto_server, tmp_path), "PROFILED_WORKER_VISIBILITY_TIMEOUT": "3"}
    proxy, web, _ = roles(tmp_path, env)
    slow = Twistd(
        ["--role=worker", "--driver=aws"],
        tmp_path,
        {
            **env,
            **FAST_WORKER,
            "PROFILED_CRUNCH_TEST_HOOKS": "1",
            "PROFILED_CRUNCH_TEST_DELAY": "60",
        },
        name="slow-worker",
    )
    sqs = moto_server.botocore("sqs")

    def in_flight() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=env["PROFILED_AWS_QUEUE_URL"],
            AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesNotVisible"])

    with running(proxy, web, slow):
        image_id = upload(web, sideways_jpeg()).json()["id"]
        wait_until(in_flight, 20, what="the job to be received")
        os.killpg(slow.proc.pid, signal.SIGKILL)
        slow.proc.wait(10)
        assert wait_for_status(web, image_id, timeout=2, want=("pending",))["status"] == "pending"
        fresh = Twistd(
            ["--role=worker", "--driver=aws"], tmp_path, {**env, **FAST_WORKER}, "fresh-worker"
        )
        with running(fresh):
            status = wait_for_status(web, image_id, timeout=60)
        assert status["status"] == "ready", status
        assert_served(status)
