"""End to end on the aws driver: S3 and SQS on a moto server, the load of bench.e2e.

    .venv/bin/python -m bench.e2e_aws

moto (``python -m moto.server``, from the test extra) runs on 127.0.0.1 at a
free port, started here as the tests start it (tests/aws_servers.py): IAM
auth on, three unsigned calls spent on an IAM user, its policy and its key,
so every request after that is SigV4-signed and checked. Each run gets a
fresh moto, and fresh buckets and queues made by ``profiled-admin setup-aws``
(the job queue with its dead-letter queue and redrive policy), as an
operator makes them. moto keeps objects under 1 MiB in memory and spools
bigger ones (the 3.5 MB originals) to temporary files under bench/.work, so
that 1,200 uploads do not hold 4 GB of its memory.

1. Sustained: ``twistd profiled --role=web --driver=aws`` and ``--role=worker
   --driver=aws`` (its default concurrency), ``PROFILED_AWS_*`` in their
   environment; the open-loop client of bench.e2e (``sustained``) at the same
   rate and for the same time (``BENCH_E2E_RATE``, ``BENCH_E2E_SECONDS``),
   then the lighter run. The queue depth is ApproximateNumberOfMessages +
   NotVisible + Delayed of the job queue, read with botocore twice a second.
2. Throughput (``BENCH_E2E_AWS_DRAIN=0`` skips it): N originals uploaded once
   to a private bucket with no worker running; per run, a fresh public bucket
   and queue, one or two workers (each with one crunch child) started, then
   the N ids sent to the queue at once, and the time until the queue is empty.

Ready detection. moto spends about 4 ms of CPU on each signed HEAD (measured
on the development machine), and at 20 uploads/s some 20 to 40 images are in
flight: a HEAD of each every 50 ms would be 400-800 requests a second, more
than moto can serve, and the benchmark would measure its own polling.
Polling ``GET /v1/images/<id>`` is worse: the web role makes two or three
S3 HEADs for each. So the worker's own log tells when to look: the worker
writes the default variant last, acks the job, then logs ``job <id> ready``
(JSON, one line per event). The benchmark reads the worker's log every 5 ms
and, for each id logged ready, HEADs the default variant in the public
bucket directly against moto once, to see it there. The image's ready time is
when the log line was read; an id whose HEAD does not find the variant is
looked at again every 100 ms and is ready when a HEAD finds it. That is one
HEAD per image (about 8% of a core at 20/s, counted with moto), and the
figures say how many requests the benchmark made.

Alongside every figure: the CPU seconds of moto, the web role, the worker and
its crunch children over the run, and moto's share of them, since moto in
server mode is a Python process on the same two cores as profiled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import common, e2e
from tests.aws_servers import (
    MOTO_BOOTSTRAP_CALLS,
    SAFE_AWS_ENV,
    AwsServer,
    moto_access_key,
)

WORK = e2e.WORK
N_QUEUED = e2e.N_QUEUED
#: moto keeps an object up to this size in memory, bigger ones in a temporary file.
MOTO_KEY_BUFFER = 1 << 20
#: How often an id logged ready whose variant a HEAD did not find is looked at again.
RECHECK_S = 0.1
#: The workers' SQS long poll: the default, as an operator runs it. (bench.e2e's
#: one second would make every receive a short poll: the SQS queue long-polls
#: whole seconds of what is left, floor(0.99...) = 0, so idle workers would
#: spin on ReceiveMessage and keep moto busy.)
POLL_WAIT = {"PROFILED_WORKER_POLL_WAIT": "20"}


class Moto:
    """A running moto server and its (only) IAM key."""

    def __init__(self, server: AwsServer, pid: int) -> None:
        self.server = server
        self.pid = pid

    def cpu(self) -> float:
        return sum(common.tree_cpu_seconds(self.pid))

    def peak_rss_mib(self) -> float:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0


@contextmanager
def moto(name: str) -> Iterator[Moto]:
    """A fresh moto server on 127.0.0.1 for the ``with`` block; stopped and cleaned after."""
    port = common.free_port()
    tmp = e2e.fresh(f"{name}-moto-tmp")
    env = {
        **os.environ,
        **SAFE_AWS_ENV,
        "INITIAL_NO_AUTH_ACTION_COUNT": str(MOTO_BOOTSTRAP_CALLS),
        "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(MOTO_KEY_BUFFER),
        "TMPDIR": str(tmp),
    }
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = WORK / f"{name}-moto.log"
    try:
        with common.process(cmd, log, env=env) as proc:
            common.wait_port(port, timeout=60, proc=proc)
            endpoint = f"http://127.0.0.1:{port}"
            key = moto_access_key(endpoint, "profiled-bench")
            yield Moto(AwsServer("moto", endpoint, *key, log_path=log), proc.pid)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def setup_aws(server: AwsServer, name: str, private_bucket: str | None = None) -> dict[str, str]:
    """Buckets and queues by ``profiled-admin setup-aws``; the environment of the roles."""
    env = {
        **server.env(),
        "PROFILED_DRIVER_NAME": "aws",
        "PROFILED_AWS_PRIVATE_BUCKET": private_bucket or f"{name}-private",
        "PROFILED_AWS_PUBLIC_BUCKET": f"{name}-public",
    }
    done = subprocess.run(
        [str(common.VENV_BIN / "profiled-admin"), "setup-aws", "--queue-name", name],
        env={**os.environ, **env, "PYTHONPATH": str(common.REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"profiled-admin setup-aws failed:\n{done.stdout}\n{done.stderr}")
    for key, url in re.findall(r'^(queue_url|dead_letter_queue_url) = "(.*)"$', done.stdout, re.M):
        env[f"PROFILED_AWS_{key.upper()}"] = url
    return env


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Jobs waiting, being worked on, or delayed (a retry), as SQS counts them."""
    names = ("", "NotVisible", "Delayed")
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=[f"ApproximateNumberOfMessages{n}" for n in names]
    )["Attributes"]
    return sum(int(attributes.get(f"ApproximateNumberOfMessages{n}", 0)) for n in names)


class AwsDeployment:
    """The two roles on S3/SQS: readiness from the worker's log checked by a HEAD on moto."""

    def __init__(
        self, moto: Moto, env: dict[str, str], web_port: int, pids: tuple[int, int], log: Path
    ) -> None:
        self.moto = moto
        self.web_port = web_port
        self.pids = pids
        self.bucket = env["PROFILED_AWS_PUBLIC_BUCKET"]
        self.queue_url = env["PROFILED_AWS_QUEUE_URL"]
        # One client per thread that uses it: the watcher HEADs, the sampler reads the queue.
        self.s3 = moto.server.botocore("s3")
        self.sqs = moto.server.botocore("sqs")
        self.log = log.open("rb")
        self.log.seek(0, os.SEEK_END)  # the log is appended to: only this run's lines
        self.partial = b""
        #: ids the worker logged ready -> when the line was read, or when to HEAD again.
        self.logged: dict[str, float] = {}
        self.recheck: dict[str, float] = {}
        self.heads = 0
        self.depth_reads = 0

    def _read_log(self) -> None:
        chunk = self.log.read()
        if not chunk:
            return
        now = time.monotonic()
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            if b'"outcome":"ready"' in line:
                self.logged.setdefault(json.loads(line)["Fields"]["id"], now)

    def _published(self, image_id: str) -> bool:
        from botocore.exceptions import ClientError

        self.heads += 1
        try:
            self.s3.head_object(Bucket=self.bucket, Key=image_id)
        except ClientError:
            return False
        return True

    def ready(self, pending: Sequence[str]) -> list[tuple[str, float]]:
        self._read_log()
        out = []
        for image_id in pending:
            when = self.logged.get(image_id)
            if when is None or self.recheck.get(image_id, 0.0) > time.monotonic():
                continue
            if self._published(image_id):
                # A late find counts from the HEAD that found it, not from the log line.
                out.append((image_id, time.monotonic() if image_id in self.recheck else when))
                del self.logged[image_id]
                self.recheck.pop(image_id, None)
            else:
                self.recheck[image_id] = time.monotonic() + RECHECK_S
        return out

    def queue_depth(self) -> int:
        self.depth_reads += 1
        return queue_depth(self.sqs, self.queue_url)

    def cpu(self) -> dict[str, float]:
        return {**e2e.role_cpu(*self.pids), "moto": self.moto.cpu()}

    def extra(self) -> dict[str, Any]:
        return {
            "observer_requests": {"s3_head": self.heads, "sqs_attributes": self.depth_reads},
            "moto_peak_rss_mib": self.moto.peak_rss_mib(),
        }


def sustained(bodies: list[bytes], rate: float, seconds: float, name: str) -> dict[str, Any]:
    data = e2e.fresh(f"{name}-data")  # the web role's spool directory only
    web_port, worker_port = common.free_port(), common.free_port()
    aws = ["--driver=aws"]
    with moto(name) as m:
        env = setup_aws(m.server, name)
        worker_log = WORK / f"{name}-worker.log"
        worker_log.touch()
        with (
            e2e.web(web_port, data, f"{name}-web", aws, **env) as w,
            e2e.worker(worker_port, data, f"{name}-worker", None, aws, **env, **POLL_WAIT) as k,
        ):
            common.wait_http(web_port)
            common.wait_http(worker_port)
            time.sleep(1.0)  # the crunch children are up
            run = AwsDeployment(m, env, web_port, (w.pid, k.pid), worker_log)
            out = e2e.sustained(run, bodies, rate, seconds)
    shutil.rmtree(data, ignore_errors=True)
    return out


def upload_originals(m: Moto, bodies: list[bytes]) -> tuple[str, list[str]]:
    """N originals in a private bucket of their own, by a web role; (bucket, ids)."""
    env = setup_aws(m.server, "bench-originals")
    data = e2e.fresh("originals-data")
    port = common.free_port()
    with e2e.web(port, data, "originals-web", ["--driver=aws"], **env):
        common.wait_http(port)
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(pool.map(lambda i: e2e.post(port, bodies[i % len(bodies)]), range(N_QUEUED)))
    shutil.rmtree(data, ignore_errors=True)
    return env["PROFILED_AWS_PRIVATE_BUCKET"], ids


def drain(m: Moto, private: str, ids: list[str], label: str, workers: int) -> dict[str, Any]:
    """``ids`` sent to a fresh queue at once, drained by ``workers`` into a fresh public bucket."""
    name = f"bench-drain-{label}-{int(time.monotonic() * 1000) % 10**8}"
    env = setup_aws(m.server, name, private_bucket=private)
    data = e2e.fresh("drain-data")
    sqs = m.server.botocore("sqs")
    ports = [common.free_port() for _ in range(workers)]
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                e2e.worker(
                    p,
                    data,
                    f"{name}-worker-{i}",
                    None,
                    ["--driver=aws"],
                    PROFILED_WORKER_CONCURRENCY="1",
                    **env,
                    **POLL_WAIT,
                )
            )
            for i, p in enumerate(ports)
        ]
        for p in ports:
            common.wait_http(p)
        time.sleep(1.0)  # the crunch children are up
        trees0 = [common.tree_cpu_seconds(proc.pid) for proc in procs]
        moto0, machine0 = m.cpu(), common.machine_cpu()
        t0 = time.monotonic()
        for start in range(0, len(ids), 10):
            batch = ids[start : start + 10]
            entries = [{"Id": str(j), "MessageBody": i} for j, i in enumerate(batch)]
            sqs.send_message_batch(QueueUrl=env["PROFILED_AWS_QUEUE_URL"], Entries=entries)
        deadline = t0 + 300
        while time.monotonic() < deadline:
            if queue_depth(sqs, env["PROFILED_AWS_QUEUE_URL"]) == 0:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        trees1 = [common.tree_cpu_seconds(proc.pid) for proc in procs]
        moto_cpu, machine1 = m.cpu() - moto0, common.machine_cpu()
    shutil.rmtree(data, ignore_errors=True)
    s3 = m.server.botocore("s3")
    keys = s3.list_objects_v2(Bucket=env["PROFILED_AWS_PUBLIC_BUCKET"]).get("KeyCount", 0)
    worker_cpu = sum(b[0] - a[0] for a, b in zip(trees0, trees1, strict=True))
    crunch_cpu = sum(b[1] - a[1] for a, b in zip(trees0, trees1, strict=True))
    cpu = worker_cpu + crunch_cpu
    busy = machine1[0] - machine0[0]
    out = {
        "workers": workers,
        "images": len(ids),
        "ready": keys // 3,
        "seconds": elapsed,
        "images_per_s": len(ids) / elapsed,
        "cpu_seconds": cpu,
        "moto_cpu_seconds": moto_cpu,
        "machine_cpu_s": {
            "profiled": cpu,
            "moto": moto_cpu,
            "others": max(0.0, busy - cpu - moto_cpu),
            "idle": machine1[1] - machine0[1],
        },
        "worker_cpu_ms_per_image": 1000 * worker_cpu / max(1, len(ids)),
        "crunch_cpu_ms_per_image": 1000 * crunch_cpu / max(1, len(ids)),
        "moto_cpu_ms_per_image": 1000 * moto_cpu / max(1, len(ids)),
        "images_per_cpu_s": len(ids) / cpu if cpu else None,
    }
    common.say(f"drain {label}: {out['images_per_s']:.2f} images/s ({out['ready']} ready)")
    return out


def throughput(bodies: list[bytes]) -> dict[str, Any]:
    """1 worker vs 2 on one moto, interleaved, the originals uploaded once."""
    drains: dict[str, list[dict[str, Any]]] = {"1 worker": [], "2 workers": []}
    with moto("drain") as m:
        private, ids = upload_originals(m, bodies)
        for _ in range(common.repeats(3)):
            drains["1 worker"].append(drain(m, private, ids, "one", 1))
            drains["2 workers"].append(drain(m, private, ids, "two", 2))
    return {
        label: {
            "images_per_s": common.median([r["images_per_s"] for r in rs]),
            "images_per_cpu_s": common.median([r["images_per_cpu_s"] or 0 for r in rs]),
            "runs": rs,
        }
        for label, rs in drains.items()
    }


def main() -> None:
    import moto as moto_package

    bodies = e2e.photos()
    result: dict[str, Any] = {
        "command": ".venv/bin/python -m bench.e2e_aws",
        "photo": {"size": list(e2e.PHONE), "bytes": [len(b) for b in bodies]},
        "moto": {"version": moto_package.__version__, "key_buffer_bytes": MOTO_KEY_BUFFER},
    }
    result["sustained"] = sustained(bodies, e2e.RATE, e2e.SECONDS, "bench-sustained")
    result["sustained_low"] = sustained(bodies, e2e.LOW_RATE, e2e.LOW_SECONDS, "bench-low")
    if os.environ.get("BENCH_E2E_AWS_DRAIN", "1") != "0":
        result["throughput"] = throughput(bodies)
    common.save("e2e_aws", result)


if __name__ == "__main__":
    main()
