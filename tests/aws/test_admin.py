"""``profiled-admin setup-aws`` and ``dead-letters`` against moto, as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.aws

#: The code under test, first on the path even when profiled is not installed.
REPO = str(Path(__file__).resolve().parents[2])


def admin(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "profiled.admin", *args],
        env={**os.environ, **env, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_config(path: Path, name: str, max_attempts: int = 3, extra: str = "") -> Path:
    path.write_text(
        f"""
[aws]
private_bucket = "{name}-private"
public_bucket = "{name}-public"
{extra}

[worker]
max_attempts = {max_attempts}
visibility_timeout = 45
"""
    )
    return path


def urls(output: str) -> dict[str, str]:
    return dict(re.findall(r'^(queue_url|dead_letter_queue_url) = "(.*)"$', output, re.M))


def test_setup_aws_is_idempotent_and_converges(moto_server, tmp_path):
    """setup-aws creates buckets and queues, and a second run updates instead of failing."""
    name = f"adm-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "profiled.toml", name)
    first = admin("setup-aws", "--config", str(config), "--queue-name", name, env=moto_server.env())
    assert first.returncode == 0, first.stderr
    assert f"bucket {name}-private: created" in first.stdout
    found = urls(first.stdout)
    assert found["queue_url"].endswith(f"/{name}")
    assert found["dead_letter_queue_url"].endswith(f"/{name}-dead")

    config = write_config(tmp_path / "profiled.toml", name, max_attempts=4)
    second = admin(
        "setup-aws", "--config", str(config), "--queue-name", name, env=moto_server.env()
    )
    assert second.returncode == 0, second.stderr
    assert f"bucket {name}-private: exists" in second.stdout
    assert urls(second.stdout) == found

    sqs, s3 = moto_server.botocore("sqs"), moto_server.botocore("s3")
    s3.head_bucket(Bucket=f"{name}-public")
    attributes = sqs.get_queue_attributes(QueueUrl=found["queue_url"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["VisibilityTimeout"] == "45"
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] in (4, "4")
    dead = sqs.get_queue_attributes(
        QueueUrl=found["dead_letter_queue_url"], AttributeNames=["MessageRetentionPeriod"]
    )["Attributes"]
    assert dead["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_setup_aws_refuses_a_visibility_timeout_shorter_than_a_crunch(moto_server, tmp_path):
    """A visibility timeout under the crunch limit would hand jobs out twice: refused."""
    config = write_config(tmp_path / "profiled.toml", "short", extra="")
    config.write_text(
        config.read_text().replace("visibility_timeout = 45", "visibility_timeout = 5")
    )
    done = admin("setup-aws", "--config", str(config), env=moto_server.env())
    assert done.returncode == 1
    assert "worker.visibility_timeout" in done.stderr


def test_dead_letters_list_and_redrive(moto_server, tmp_path):
    """Dead letters are listed without being consumed, then redriven to the job queue."""
    name = f"dl-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "profiled.toml", name)
    setup = admin("setup-aws", "--config", str(config), "--queue-name", name, env=moto_server.env())
    assert setup.returncode == 0, setup.stderr
    found = urls(setup.stdout)
    extra = "\n".join(f'{k} = "{v}"' for k, v in found.items())
    config = write_config(tmp_path / "profiled.toml", name, extra=extra)
    sqs = moto_server.botocore("sqs")
    for body in ("job-a", "job-b"):
        sqs.send_message(QueueUrl=found["dead_letter_queue_url"], MessageBody=body)

    env = {**moto_server.env(), "PROFILED_DRIVER_NAME": "aws"}
    listed = admin("dead-letters", "list", "--config", str(config), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["body"] for d in json.loads(listed.stdout)) == ["job-a", "job-b"]
    again = admin("dead-letters", "list", "--config", str(config), env=env)
    assert "2 dead letters" in again.stdout, again.stderr

    moved = admin("dead-letters", "redrive", "--config", str(config), env=env)
    assert moved.returncode == 0, moved.stderr
    assert "2 dead letters sent back" in moved.stdout
    got = sqs.receive_message(
        QueueUrl=found["queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    assert sorted(m["Body"] for m in got.get("Messages", [])) == ["job-a", "job-b"]
    left = admin("dead-letters", "list", "--config", str(config), env=env)
    assert "0 dead letters" in left.stdout
