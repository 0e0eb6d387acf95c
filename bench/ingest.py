"""Ingest: 1 MiB uploads through the web role vs the same bytes into the same store.

    .venv/bin/python -m bench.ingest

profiled: ``twistd -n profiled --role=web`` (local driver) pinned to CPU 0;
each ``POST /v1/images`` is sniffed, spooled, stored (temp file, fsync,
rename) and queued. Reference: ``bench/servers/plain_put.py``, stock
twisted.web on CPU 0 whose resource ``LocalStore.put``s the body into the
same kind of store in the same directory (no checks, no queue). Load: wrk on
CPU 1, 1 and 32 connections, the same file as the body. Then the web role's
RSS while 50 clients upload 10 MiB bodies, against its RSS when idle.
"""

from __future__ import annotations

import io
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench import common
from bench.sources import photo

WORK = common.WORK / "ingest"
SECONDS = 4 if not common.QUICK else 2
CONCURRENCY = (1, 32)


def body_1mib() -> Path:
    """A real photo JPEG of about 1 MiB."""
    path = WORK / "photo-1mib.jpg"
    if not path.exists():
        out = io.BytesIO()
        photo((2100, 1600), 11).save(out, "JPEG", quality=92)
        path.write_bytes(out.getvalue())
    return path


def body_10mib() -> Path:
    """10 MiB exactly: a valid JPEG header and image, then padding (the web role
    never decodes; it sniffs the header and spools the rest)."""
    path = WORK / "body-10mib.jpg"
    if not path.exists():
        out = io.BytesIO()
        Image.new("RGB", (640, 480), (90, 120, 200)).save(out, "JPEG", quality=90)
        data = out.getvalue()
        path.write_bytes(data + b"\0" * (10 * 1024 * 1024 - len(data)))
    return path


def profiled_web(port: int, data: Path, log: Path) -> Any:
    env = common.profiled_env(data, TMPDIR=str(data))
    args = ["--role=web", f"--listen=tcp:{port}:interface=127.0.0.1"]
    return common.process(common.twistd(args), log, env=env, cpus="0")


def plain_put(port: int, data: Path, log: Path) -> Any:
    # TMPDIR: twisted.web's temporary file for the body goes beside the data,
    # not into the machine's /tmp (see main()).
    env = common.profiled_env(data, TMPDIR=str(data))
    cmd = [sys.executable, "-m", "bench.servers.plain_put", str(port), str(data)]
    return common.process(cmd, log, env=env, cpus="0", cwd=common.REPO)


def load(port: int, path: str, body: Path, method: str, connections: int) -> dict[str, Any]:
    env = {"BENCH_BODY": str(body), "BENCH_METHOD": method}
    return common.wrk(f"http://127.0.0.1:{port}{path}", "upload.lua", connections, SECONDS, env)


def fresh(name: str) -> Path:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    body = body_1mib()
    runs = common.repeats(3)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {"profiled": {}, "plain_put": {}}
    # Every run gets a data directory of its own, all removed at the end: on
    # ext4 without a journal (these machines), creating a file skips every
    # inode of its block group freed in the last 30 s, so removing one run's
    # thousands of files just before the next made each create in it cost
    # 0.6-0.8 ms instead of 25 us, for both servers (docs/benchmarks.md).
    used: list[Path] = []
    for i in range(runs):
        for c in CONCURRENCY:
            for name in ("profiled", "plain_put"):
                data = fresh(f"data-{name}-{i}-{c}")
                used.append(data)
                port = common.free_port()
                log = WORK / f"{name}.log"
                starter = profiled_web if name == "profiled" else plain_put
                with starter(port, data, log) as proc:
                    if name == "profiled":
                        common.wait_http(port)
                    else:
                        common.wait_port(port, proc=proc)
                    method, path = ("POST", "/v1/images") if name == "profiled" else ("PUT", "/")
                    pids = common.tree_pids(proc.pid)
                    c0 = common.cpu_seconds(pids)
                    r = load(port, path, body, method, c)
                    r["cpu_s"] = common.cpu_seconds(pids) - c0
                    r["cpu_ms_per_upload"] = 1000 * r["cpu_s"] / max(1, r["requests"])
                common.say(
                    f"ingest run {i + 1}/{runs} {name} c={c}: {r['rps']:.1f}/s "
                    f"p99 {r['p99_ms']:.1f} ms, errors {r['errors']}"
                )
                results[name].setdefault(str(c), []).append(r)
    for data in used:
        shutil.rmtree(data, ignore_errors=True)

    rss = memory_under_load()
    summary = {
        name: {
            c: {
                "rps": common.median([r["rps"] for r in rs]),
                "p50_ms": common.median([r["p50_ms"] for r in rs]),
                "p99_ms": common.median([r["p99_ms"] for r in rs]),
                "errors": sum(sum(r["errors"].values()) for r in rs),
                "cpu_ms_per_upload": common.median([r["cpu_ms_per_upload"] for r in rs]),
            }
            for c, rs in by_c.items()
        }
        for name, by_c in results.items()
    }
    common.save(
        "ingest",
        {
            "command": ".venv/bin/python -m bench.ingest",
            "body_bytes": body.stat().st_size,
            "seconds_per_run": SECONDS,
            "runs": runs,
            "reference": "plain twisted.web PUT handler -> LocalStore.put, same directory",
            "summary": summary,
            "raw": results,
            "rss": rss,
            "versions": {"wrk": common.tool_version(["wrk", "-v"])},
        },
    )


def memory_under_load() -> dict[str, Any]:
    """RSS of the web role when idle, and its peak while 50 clients upload 10 MiB each."""
    body = body_10mib()
    data = fresh("data-rss")
    port = common.free_port()
    samples: list[int] = []
    with profiled_web(port, data, WORK / "profiled-rss.log") as proc:
        common.wait_http(port)
        time.sleep(1.0)
        idle = common.rss_kib(proc.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append(common.rss_kib(proc.pid))
                except OSError:
                    return
                time.sleep(0.05)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        seconds = 8 if not common.QUICK else 3
        env = {"BENCH_BODY": str(body), "BENCH_METHOD": "POST"}
        r = common.wrk(f"http://127.0.0.1:{port}/v1/images", "upload.lua", 50, seconds, env)
        stop.set()
        t.join()
        after = common.rss_kib(proc.pid)
    shutil.rmtree(data, ignore_errors=True)
    peak = max(samples) if samples else idle
    common.say(f"web RSS idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB under 50 x 10 MiB")
    return {
        "idle_kib": idle,
        "peak_kib": peak,
        "after_kib": after,
        "growth_kib": peak - idle,
        "uploads": r["requests"],
        "rps": r["rps"],
        "errors": r["errors"],
        "clients": 50,
        "body_bytes": body.stat().st_size,
    }


if __name__ == "__main__":
    main()
