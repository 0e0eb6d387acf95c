"""Load: 50 concurrent clients uploading for 60 s against one ``twistd --role=all``.

Each client is a thread with its own keep-alive connection that uploads an
avatar, polls until it is ready, and starts again (as people do), for
``PROFILED_LOAD_SECONDS`` (60 by default). Everything stays on 127.0.0.1,
every loop is bounded in time. The figures are printed (``pytest -s``) and
kept in the test's log directory as load.json.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import pytest
import requests

from tests import images
from tests.e2e.harness import Twistd, running
from tests.faults.chaos import crunch_children

pytestmark = [pytest.mark.heavy, pytest.mark.e2e]

CLIENTS = 50
SECONDS = float(os.environ.get("PROFILED_LOAD_SECONDS", "60"))
READY_WITHIN = 60.0
MiB = 1024


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def test_fifty_clients_for_a_minute(tmp_path: Path):
    """50 clients upload for 60 s: no error, every upload ready, memory bounded."""
    server = Twistd(
        ["--role=all", f"--data-dir={tmp_path / 'var'}"],
        tmp_path,
        {"PROFILED_WORKER_POLL_WAIT": "1", "PROFILED_LOG_LEVEL": "warn"},
    )
    # A few different photos, as 50 people would send.
    photos = [images.camera_jpeg((480 + 40 * i, 360 + 30 * i), seed=i) for i in range(5)]
    latencies: list[float] = []
    to_ready: list[float] = []
    errors: list[str] = []
    unfinished: list[str] = []
    lock = threading.Lock()
    peak = {"web": 0, "children": 0, "total": 0}
    stop = threading.Event()

    def client(n: int) -> None:
        session = requests.Session()
        deadline = time.monotonic() + SECONDS
        i = 0
        while time.monotonic() < deadline:
            data = photos[(n + i) % len(photos)]
            i += 1
            started = time.monotonic()
            try:
                r = session.post(
                    f"{server.url}/v1/images",
                    data=data,
                    headers={"Content-Type": "image/jpeg"},
                    timeout=30,
                )
            except requests.RequestException as e:
                with lock:
                    errors.append(f"upload: {e}")
                continue
            took = time.monotonic() - started
            if r.status_code != 202:
                with lock:
                    errors.append(f"upload: {r.status_code} {r.text[:100]}")
                continue
            image_id = r.json()["id"]
            with lock:
                latencies.append(took)
            give_up = time.monotonic() + READY_WITHIN
            while time.monotonic() < give_up:
                time.sleep(0.25)
                try:
                    s = session.get(f"{server.url}/v1/images/{image_id}", timeout=30).json()
                except (requests.RequestException, ValueError) as e:
                    with lock:
                        errors.append(f"status: {e}")
                    continue
                if s["status"] != "pending":
                    with lock:
                        if s["status"] == "ready":
                            to_ready.append(time.monotonic() - started)
                        else:
                            errors.append(f"{image_id} {s['status']}: {s.get('error')}")
                    break
            else:
                with lock:
                    unfinished.append(image_id)

    def monitor() -> None:
        assert server.proc is not None
        while not stop.is_set():
            web = rss_kib(server.proc.pid)
            kids = sum(rss_kib(k) for k in crunch_children(server.proc.pid))
            peak["web"] = max(peak["web"], web)
            peak["children"] = max(peak["children"], kids)
            peak["total"] = max(peak["total"], web + kids)
            stop.wait(0.5)

    with running(server):
        watcher = threading.Thread(target=monitor)
        watcher.start()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + READY_WITHIN + 60)
        elapsed = time.monotonic() - started
        stop.set()
        watcher.join(5)
        alive = [t for t in threads if t.is_alive()]
        heartbeat = server.get("/__heartbeat__").status_code

    figures = {
        "clients": CLIENTS,
        "seconds": SECONDS,
        "elapsed": round(elapsed, 1),
        "uploads_accepted": len(latencies),
        "uploads_ready": len(to_ready),
        "errors": len(errors),
        "upload_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "upload_latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "time_to_ready_p50_ms": round(statistics.median(to_ready) * 1000, 1),
        "time_to_ready_p99_ms": round(percentile(to_ready, 99) * 1000, 1),
        "peak_rss_web_mib": round(peak["web"] / MiB, 1),
        "peak_rss_children_mib": round(peak["children"] / MiB, 1),
        "peak_rss_total_mib": round(peak["total"] / MiB, 1),
    }
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=2))
    print("load figures:", json.dumps(figures))
    assert alive == []
    assert errors == [], errors[:10]
    assert unfinished == []
    assert len(to_ready) == len(latencies)
    assert len(latencies) >= 5 * CLIENTS * SECONDS / 60  # not a trickle
    assert heartbeat == 200
    assert figures["peak_rss_web_mib"] < 300
    assert figures["peak_rss_children_mib"] < 2 * 512
