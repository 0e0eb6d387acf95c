"""What every benchmark shares: paths, processes, timing, results files."""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
WORK = BENCH / ".work"
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
TWISTD = VENV_BIN / "twistd"
THUMBOR_VENV = WORK / "thumbor-venv"

#: Set BENCH_QUICK=1 for a short smoke run (fewer repeats, shorter loads).
QUICK = os.environ.get("BENCH_QUICK") == "1"


def repeats(full: int, quick: int = 1) -> int:
    return quick if QUICK else full


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def time_call(f: Callable[[], Any], runs: int, warmup: int = 1) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``f`` after ``warmup`` calls."""
    for _ in range(warmup):
        f()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something accepts on 127.0.0.1:port (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_http(port: int, path: str = "/__lbheartbeat__", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(port, path, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port}{path} did not answer 200 in {timeout}s")


def profiled_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a twistd profiled process run from this checkout."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PROFILED_LOG_FORMAT": "json",
            "PROFILED_LOCAL_DATA_DIR": str(data_dir),
            "PROFILED_DRIVER_NAME": "local",
        }
    )
    env.update(extra)
    return env


@contextmanager
def process(
    cmd: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cpus: str | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (pinned to ``cpus`` with taskset) for the ``with`` block, then stop it.

    SIGTERM to its process group, SIGKILL after 20 s: only what we started.
    """
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def twistd(args: Sequence[str]) -> list[str]:
    return [str(TWISTD), "--nodaemon", "--pidfile=", "profiled", *args]


def rss_kib(pid: int) -> int:
    """Resident set size of one process, KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the given live processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself and of its descendants, the reaped ones included.

    A worker replaces its crunch children now and then (``max_jobs_per_child``):
    a child that exited took its CPU time with it from ``/proc``, but the kernel
    added it to its parent's cutime/cstime when reaped, so the descendants'
    figure counts the live ones' utime/stime plus every process's reaped
    children. Differences of two readings are then the CPU used in between.
    """
    tick = os.sysconf("SC_CLK_TCK")
    own = descendants = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        live, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        if p == pid:
            own += live
        else:
            descendants += live
        descendants += reaped
    return own / tick, descendants / tick


def machine_cpu() -> tuple[float, float]:
    """Seconds of (busy, idle) CPU time of the whole machine so far, all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / tick, idle / tick


def run(cmd: Sequence[str], **kw: Any) -> str:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw).stdout


def tool_version(cmd: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (p.stdout + p.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def save(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine and the time of the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), **data}
    # The machine may be shared: how busy it was (1, 5, 15 minute load averages).
    data["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    data.setdefault("machine", machine())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path.relative_to(REPO)}", flush=True)
    return path


def maxrss_children_kib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def say(*args: Any) -> None:
    print(*args, flush=True)


def wrk(
    url: str,
    script: str,
    connections: int,
    seconds: float,
    env: dict[str, str] | None = None,
    cpus: str = "1",
    timeout_s: int = 30,
) -> dict[str, Any]:
    """One wrk run (one thread, pinned to ``cpus``); the JSON summary of lua/summary.lua."""
    full_env = {**os.environ, "BENCH_LUA_DIR": str(BENCH / "lua"), **(env or {})}
    cmd = [
        "taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        f"--timeout={timeout_s}s", "-s", str(BENCH / "lua" / script), url,
    ]  # fmt: skip
    p = subprocess.run(
        cmd, capture_output=True, text=True, env=full_env, timeout=seconds + timeout_s + 30
    )
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            out: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            out["rps"] = out["requests"] / out["seconds"] if out["seconds"] else 0.0
            return out
    raise RuntimeError(f"wrk gave no summary (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
