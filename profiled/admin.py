"""``profiled-admin``: operator commands that are not a running service.

    profiled-admin setup-aws [--config FILE] [--queue-name NAME] [--dead-letter-queue-name NAME]
    profiled-admin dead-letters list [--config FILE] [--driver local|aws] [--data-dir DIR] [--json]
    profiled-admin dead-letters redrive [--config FILE] [--driver ...] [--id MSGID]

``setup-aws`` creates the two buckets, the job queue and its dead-letter
queue with the redrive policy, idempotently: run it again after changing
``worker.max_attempts`` or ``worker.visibility_timeout`` and it brings the
queues in line. It is a one-shot CLI, so it uses plain (blocking) botocore
clients; credentials come from botocore's standard chain, as everywhere.

``dead-letters`` works with either driver through the queue's own
``list_dead()`` / ``redrive_dead()``, on a reactor of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from profiled.config import Settings, load_settings
from profiled.errors import ConfigError, ProfiledError

#: Dead letters are kept this long: time to notice, fix and redrive (SQS's maximum).
DEAD_LETTER_RETENTION = 14 * 24 * 3600
#: Jobs wait this long for a worker before SQS drops them (SQS's maximum too).
QUEUE_RETENTION = 14 * 24 * 3600
DEFAULT_QUEUE_NAME = "profiled-jobs"


def _queue_name(url: str, default: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1] if url else default


def _botocore_clients(settings: Settings) -> tuple[Any, Any]:
    import botocore.session
    from botocore.config import Config

    aws = settings.aws
    session = botocore.session.get_session()
    kwargs: dict[str, Any] = {
        "region_name": aws.region,
        "config": Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": aws.max_retries},
            connect_timeout=aws.timeout,
            read_timeout=aws.timeout,
        ),
    }
    if aws.endpoint_url:
        kwargs["endpoint_url"] = aws.endpoint_url
    return session.create_client("s3", **kwargs), session.create_client("sqs", **kwargs)


def _ensure_bucket(s3: Any, bucket: str, region: str, out: TextIO) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        print(f"bucket {bucket}: exists", file=out)
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 404:
            raise ProfiledError(
                f"bucket {bucket}: cannot use it ({e}); is the name taken by another account?"
            ) from e
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        print(f"bucket {bucket}: created", file=out)
    try:
        # Nothing is ever served from S3 directly: the proxy reads with its
        # own credentials, so both buckets refuse public access.
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    except ClientError as e:
        print(f"bucket {bucket}: public access block not set ({e})", file=out)


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    # CreateQueue refuses an existing queue with other attributes: create it
    # bare, then set the attributes, so a second run converges.
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def setup_aws(
    settings: Settings,
    queue_name: str | None = None,
    dead_letter_queue_name: str | None = None,
    out: TextIO = sys.stdout,
) -> dict[str, str]:
    """Create or update the buckets and queues ``settings`` need; return the queue URLs."""
    aws, worker = settings.aws, settings.worker
    if worker.visibility_timeout <= settings.images.crunch_seconds:
        raise ConfigError(
            f"worker.visibility_timeout: {worker.visibility_timeout} s must be longer than "
            f"images.crunch_seconds ({settings.images.crunch_seconds} s), or jobs are "
            "handed to a second worker while the first still crunches"
        )
    s3, sqs = _botocore_clients(settings)
    for bucket in (aws.private_bucket, aws.public_bucket):
        _ensure_bucket(s3, bucket, aws.region, out)
    name = queue_name or _queue_name(aws.queue_url, DEFAULT_QUEUE_NAME)
    dead_name = dead_letter_queue_name or _queue_name(aws.dead_letter_queue_url, f"{name}-dead")
    dead_url, dead_arn = _ensure_queue(
        sqs, dead_name, {"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION)}
    )
    print(f"queue {dead_name}: ready (dead letters kept 14 days)", file=out)
    url, _ = _ensure_queue(
        sqs,
        name,
        {
            "VisibilityTimeout": str(worker.visibility_timeout),
            "MessageRetentionPeriod": str(QUEUE_RETENTION),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(worker.max_attempts)}
            ),
        },
    )
    print(
        f"queue {name}: ready (visibility {worker.visibility_timeout} s, "
        f"dead-lettered after {worker.max_attempts} receives)",
        file=out,
    )
    print("\nPut these in the [aws] section of the configuration:", file=out)
    print(f'queue_url = "{url}"', file=out)
    print(f'dead_letter_queue_url = "{dead_url}"', file=out)
    return {"queue_url": url, "dead_letter_queue_url": dead_url}


def _format_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


async def _dead_letters(reactor: Any, settings: Settings, args: argparse.Namespace) -> None:
    from profiled.drivers import build_drivers

    queue: Any = build_drivers(settings, reactor).queue
    if not hasattr(queue, "list_dead"):
        raise ProfiledError(f"driver {settings.driver.name}: has no dead-letter commands")
    if args.action == "list":
        dead = await queue.list_dead()
        if args.json:
            print(json.dumps(dead, indent=2))
            return
        for d in dead:
            sent, died = _format_time(d["sent_at"]), _format_time(d["dead_at"])
            print(
                f"{d['msgid']}  sent {sent}  dead {died}"
                f"  receives {d['receive_count']}  body {d['body']!r}"
            )
        print(f"{len(dead)} dead letter{'' if len(dead) == 1 else 's'}")
    else:
        moved = await queue.redrive_dead(args.id)
        print(f"{moved} dead letter{'' if moved == 1 else 's'} sent back to the queue")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="profiled-admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="the TOML configuration file")
        p.add_argument("--driver", choices=("local", "aws"), help="override driver.name")
        p.add_argument("--data-dir", help="override local.data_dir")

    setup = commands.add_parser(
        "setup-aws", help="create the S3 buckets and the SQS queues (idempotent)"
    )
    common(setup)
    setup.add_argument("--queue-name", help=f"default: from aws.queue_url, or {DEFAULT_QUEUE_NAME}")
    setup.add_argument(
        "--dead-letter-queue-name",
        help="default: from aws.dead_letter_queue_url, or <queue name>-dead",
    )

    dead = commands.add_parser("dead-letters", help="look at or redrive parked jobs")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="show the dead letters")
    common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    redrive = actions.add_parser("redrive", help="send dead letters back to the queue")
    common(redrive)
    redrive.add_argument("--id", help="only this message id (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``profiled-admin`` console script."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.driver:
        overrides["driver.name"] = args.driver
    if args.data_dir:
        overrides["local.data_dir"] = args.data_dir
    try:
        settings = load_settings(args.config, os.environ, overrides)
        if args.command == "setup-aws":
            setup_aws(settings, args.queue_name, args.dead_letter_queue_name)
            return 0
        return _run_on_reactor(settings, args)
    except (ProfiledError, OSError) as e:
        print(f"profiled-admin: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # botocore's ClientError, NoCredentialsError...
        print(f"profiled-admin: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _run_on_reactor(settings: Settings, args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    failures: list[BaseException] = []

    async def run(reactor: Any) -> None:
        try:
            await _dead_letters(reactor, settings, args)
        except Exception as e:
            failures.append(e)

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    if failures:
        raise failures[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
