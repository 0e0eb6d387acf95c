"""End to end on the local driver: upload-to-ready latency at a sustained rate,
and worker throughput with one and two worker processes.

    .venv/bin/python -m bench.e2e

1. Sustained: a web role and a worker role (its default concurrency: one
   crunch child per core) share one data directory; an open-loop client
   POSTs phone-sized photos (12 MP JPEG, EXIF-rotated, about 3.5 MB) at
   ``BENCH_E2E_RATE`` per second (20) for ``BENCH_E2E_SECONDS`` (60). An
   image is ready when its default variant is in the public store (watched
   on disk, so the web role is not polled). Latency is from the start of the
   POST to ready. The queue depth (new + claimed) is sampled twice a second,
   and the CPU seconds of the web role, the worker and its crunch children
   are read before and after.
2. Throughput: the same N originals queued at once (moved into the queue
   after the workers are up), drained by one worker process pinned to one
   core, by one unpinned, and by two (each worker with one crunch child).

The open-loop run (``sustained``) takes any ``Deployment``: bench.e2e_aws
runs the same client at the same rates against S3 and SQS on moto.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from bench import common
from bench.sources import camera_jpeg

WORK = common.WORK / "e2e"
RATE = float(os.environ.get("BENCH_E2E_RATE", "20"))
SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", "60" if not common.QUICK else "8"))
#: A second, lighter run: the latency when the machine keeps up.
LOW_RATE = float(os.environ.get("BENCH_E2E_LOW_RATE", "4"))
LOW_SECONDS = float(os.environ.get("BENCH_E2E_LOW_SECONDS", "30" if not common.QUICK else "5"))
N_QUEUED = 100 if not common.QUICK else 16
PHONE = (4032, 3024)
#: Seconds the CPU of the idle roles is measured for, before a sustained run.
IDLE_S = 3.0


def photos() -> list[bytes]:
    d = WORK / "photos"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(4):
        p = d / f"phone-{seed}.jpg"
        if not p.exists():
            p.write_bytes(camera_jpeg(seed + 100, PHONE))
        out.append(p.read_bytes())
    return out


def ready_path(data: Path, image_id: str) -> Path:
    from profiled.drivers.local.store import encode_key

    fanout, name = encode_key(image_id)
    return data / "public" / "objects" / fanout / f"{name}.meta"


def queue_depth(data: Path) -> int:
    n = 0
    for sub in ("new", "claimed"):
        try:
            n += len(os.listdir(data / "queue" / sub))
        except FileNotFoundError:
            pass
    return n


def post(port: int, body: bytes) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("POST", "/v1/images", body, {"Content-Type": "image/jpeg"})
        r = c.getresponse()
        doc = r.read()
        if r.status != 202:
            raise RuntimeError(f"upload answered {r.status}: {doc[:200]!r}")
        return str(json.loads(doc)["id"])
    finally:
        c.close()


def fresh(name: str) -> Path:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def web(port: int, data: Path, name: str = "web", args: Sequence[str] = (), **env: str) -> Any:
    cmd = common.twistd(["--role=web", f"--listen=tcp:{port}:interface=127.0.0.1", *args])
    return common.process(cmd, WORK / f"{name}.log", env=common.profiled_env(data, **env))


def worker(
    port: int,
    data: Path,
    name: str,
    cpus: str | None = None,
    args: Sequence[str] = (),
    **env: str,
) -> Any:
    cmd = common.twistd(["--role=worker", f"--listen=tcp:{port}:interface=127.0.0.1", *args])
    full_env = common.profiled_env(data, **{"PROFILED_WORKER_POLL_WAIT": "1", **env})
    return common.process(cmd, WORK / f"{name}.log", env=full_env, cpus=cpus)


def role_cpu(web_pid: int, worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of the web role, the worker process and its crunch children."""
    worker_own, crunch = common.tree_cpu_seconds(worker_pid)
    return {"web": sum(common.tree_cpu_seconds(web_pid)), "worker": worker_own, "crunch": crunch}


class Deployment(Protocol):
    """A web role and a worker role that are up, as the open-loop run sees them."""

    web_port: int

    def ready(self, pending: Sequence[str]) -> list[tuple[str, float]]:
        """Those of ``pending`` that are ready now, with when (``time.monotonic``).

        Called every few milliseconds from one thread; it must stay cheap for
        what it watches, or the run measures its own polling.
        """
        ...

    def queue_depth(self) -> int:
        """Jobs queued or being worked on (twice a second, from another thread)."""
        ...

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far, by process (web, worker, crunch, ...)."""
        ...

    def extra(self) -> dict[str, Any]:
        """Figures of this deployment only, added to the result."""
        ...


class LocalDeployment:
    """Both roles on one data directory: readiness and the queue read off the disk."""

    def __init__(self, data: Path, web_port: int, web_pid: int, worker_pid: int) -> None:
        self.data = data
        self.web_port = web_port
        self.pids = (web_pid, worker_pid)

    def ready(self, pending: Sequence[str]) -> list[tuple[str, float]]:
        return [(i, time.monotonic()) for i in pending if ready_path(self.data, i).exists()]

    def queue_depth(self) -> int:
        return queue_depth(self.data)

    def cpu(self) -> dict[str, float]:
        return role_cpu(*self.pids)

    def extra(self) -> dict[str, Any]:
        return {}


def sustained(run: Deployment, bodies: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    """The open-loop client at ``rate`` uploads/s for ``seconds`` against ``run``.

    Each upload starts on time whatever the earlier ones are doing (a thread
    each, up to 64 at once), so a slow system sees the offered load, not a
    politely reduced one. After the last upload it waits (at most 60 s) for
    every accepted image to be ready; an overloaded run is reported as it is.
    """
    started: dict[str, float] = {}
    uploaded: dict[str, float] = {}
    ready: dict[str, float] = {}
    depth: list[tuple[float, int]] = []
    failures: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    n = int(rate * seconds)

    def one(i: int, t_start: float) -> None:
        try:
            image_id = post(run.web_port, bodies[i % len(bodies)])
        except Exception as e:
            with lock:
                failures.append(str(e))
            return
        with lock:
            started[image_id] = t_start
            uploaded[image_id] = time.monotonic()

    def watch() -> None:
        while not done.is_set():
            with lock:
                pending = [i for i in started if i not in ready]
            for image_id, when in run.ready(pending):
                ready[image_id] = when
            time.sleep(0.005)

    def sample(t0: float) -> None:
        # Its own thread: a depth read that goes over the network must not
        # delay the readiness watch.
        while not done.is_set():
            depth.append((round(time.monotonic() - t0, 2), run.queue_depth()))
            done.wait(0.5)

    # What the roles (and moto) burn with nothing to do: long polls, timers.
    idle0 = run.cpu()
    time.sleep(IDLE_S)
    idle = {k: (v - idle0[k]) / IDLE_S for k, v in run.cpu().items()}
    cpu0, machine0 = run.cpu(), common.machine_cpu()
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=watch, daemon=True),
        threading.Thread(target=sample, args=(t0,), daemon=True),
    ]
    for t in threads:
        t.start()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, time.monotonic())
    sent_until = time.monotonic() - t0
    deadline = time.monotonic() + 60  # bounded: an overloaded run is reported as it is
    while time.monotonic() < deadline:
        with lock:
            if len(ready) >= len(started):
                break
        time.sleep(0.05)
    done.set()
    for t in threads:
        t.join()
    window = time.monotonic() - t0
    depth.append((round(window, 2), run.queue_depth()))
    cpu1, machine1 = run.cpu(), common.machine_cpu()
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
    busy = machine1[0] - machine0[0]
    latency = [(ready[i] - started[i]) * 1000 for i in ready]
    upload = [(uploaded[i] - started[i]) * 1000 for i in uploaded]
    out = {
        "rate_per_s": rate,
        "seconds": seconds,
        "sent": n,
        "accepted": len(started),
        "ready": len(ready),
        "upload_failures": failures[:5],
        "sending_took_s": sent_until,
        "latency_ms": {
            "p50": common.percentile(latency, 50),
            "p90": common.percentile(latency, 90),
            "p99": common.percentile(latency, 99),
            "max": max(latency) if latency else None,
        },
        "upload_ms": {"p50": common.percentile(upload, 50), "p99": common.percentile(upload, 99)},
        "queue_depth_max": max((d for _, d in depth), default=0),
        "queue_depth_last": depth[-1][1] if depth else 0,
        "queue_depth_samples": depth,
        # From the first upload until all were ready (or the wait gave up).
        "window_s": window,
        "cpu_s": cpu,
        "idle_cpu_s_per_s": idle,
        "machine_cpu_s": {
            "ours": sum(cpu.values()),
            "others": max(0.0, busy - sum(cpu.values())),
            "idle": machine1[1] - machine0[1],
        },
        **run.extra(),
    }
    common.say(
        f"sustained: {json.dumps({k: v for k, v in out.items() if k != 'queue_depth_samples'})}"
    )
    return out


def sustained_local(bodies: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    data = fresh("data-sustained")
    web_port, worker_port = common.free_port(), common.free_port()
    with web(web_port, data) as w, worker(worker_port, data, "worker-sustained") as k:
        common.wait_http(web_port)
        common.wait_http(worker_port)
        time.sleep(1.0)  # the crunch children are up
        out = sustained(LocalDeployment(data, web_port, w.pid, k.pid), bodies, rate, seconds)
    shutil.rmtree(data, ignore_errors=True)
    return out


def queued_template(bodies: list[bytes]) -> Path:
    """A data directory with N originals stored and their ids queued (queue/staged)."""
    template = WORK / f"template-{N_QUEUED}"
    if (template / "queue" / "staged").is_dir():
        return template
    shutil.rmtree(template, ignore_errors=True)
    template.mkdir(parents=True)
    port = common.free_port()
    with web(port, template, "web-template"):
        common.wait_http(port)
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda i: post(port, bodies[i % len(bodies)]), range(N_QUEUED)))
    os.rename(template / "queue" / "new", template / "queue" / "staged")
    (template / "queue" / "new").mkdir()
    return template


def drain(template: Path, label: str, workers: int, cpus: str | None) -> dict[str, Any]:
    data = WORK / "data-drain"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data)
    ports = [common.free_port() for _ in range(workers)]
    staged = sorted(os.listdir(data / "queue" / "staged"))
    from contextlib import ExitStack

    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                worker(p, data, f"worker-{label}-{i}", cpus, PROFILED_WORKER_CONCURRENCY="1")
            )
            for i, p in enumerate(ports)
        ]
        for p in ports:
            common.wait_http(p)
        time.sleep(1.0)  # the crunch children are up
        pids = [pid for proc in procs for pid in common.tree_pids(proc.pid)]
        cpu0 = common.cpu_seconds(pids)
        busy0, idle0 = common.machine_cpu()
        parents0 = common.cpu_seconds([proc.pid for proc in procs])
        t0 = time.monotonic()
        for name in staged:
            os.rename(data / "queue" / "staged" / name, data / "queue" / "new" / name)
        deadline = t0 + 300
        while time.monotonic() < deadline:
            if queue_depth(data) == 0:
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        pids = [pid for proc in procs for pid in common.tree_pids(proc.pid)]
        cpu = common.cpu_seconds(pids) - cpu0
        parents = common.cpu_seconds([proc.pid for proc in procs]) - parents0
        busy1, idle1 = common.machine_cpu()
    ready = len(list((data / "public" / "objects").rglob("*.meta"))) // 3
    shutil.rmtree(data, ignore_errors=True)
    out = {
        "workers": workers,
        "pinned": cpus,
        "images": len(staged),
        "ready": ready,
        "seconds": elapsed,
        "images_per_s": len(staged) / elapsed,
        "cpu_seconds": cpu,
        # Where the machine's CPU went meanwhile: ours, everything else, idle.
        "machine_cpu_s": {
            "profiled": cpu,
            "others": max(0.0, busy1 - busy0 - cpu),
            "idle": idle1 - idle0,
        },
        "worker_cpu_ms_per_image": 1000 * parents / max(1, len(staged)),
        "crunch_cpu_ms_per_image": 1000 * (cpu - parents) / max(1, len(staged)),
        "images_per_cpu_s": len(staged) / cpu if cpu else None,
    }
    common.say(f"drain {label}: {out['images_per_s']:.2f} images/s ({out['ready']} ready)")
    return out


def main() -> None:
    bodies = photos()
    result: dict[str, Any] = {
        "command": ".venv/bin/python -m bench.e2e",
        "photo": {"size": list(PHONE), "bytes": [len(b) for b in bodies]},
    }
    template = queued_template(bodies)
    runs = common.repeats(3)
    drains: dict[str, list[dict[str, Any]]] = {
        "1 worker, 1 core": [],
        "1 worker": [],
        "2 workers": [],
    }
    for _ in range(runs):
        drains["1 worker, 1 core"].append(drain(template, "pinned", 1, "0"))
        drains["1 worker"].append(drain(template, "one", 1, None))
        drains["2 workers"].append(drain(template, "two", 2, None))
    result["throughput"] = {
        label: {
            "images_per_s": common.median([r["images_per_s"] for r in rs]),
            "images_per_cpu_s": common.median([r["images_per_cpu_s"] or 0 for r in rs]),
            "runs": rs,
        }
        for label, rs in drains.items()
    }
    result["sustained"] = sustained_local(bodies, RATE, SECONDS)
    result["sustained_low"] = sustained_local(bodies, LOW_RATE, LOW_SECONDS)
    common.save("e2e", result)


if __name__ == "__main__":
    main()
