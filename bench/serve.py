"""Serve: ``GET /a/<id>`` requests/s over 1,000 ids of about 8 KB, vs nginx and static.File.

    .venv/bin/python -m bench.serve

The server under test is pinned to CPU 0 (taskset), wrk to CPU 1, 64
connections, each connection walking the 1,000 paths. The same bytes are
served by profiled's proxy role (from its public LocalStore), by nginx
(one worker, access log off, sendfile) and by a plain
``twisted.web.static.File`` over a directory holding them as ``a/<id>``.
Runs are interleaved; the median is reported.

Then every core: two proxy processes sharing one listening socket (passed
as systemd socket activation does, ``--listen=systemd:domain=INET:index=0``),
against one proxy process, neither pinned (wrk shares the two cores too).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import common
from bench.sources import photo

WORK = common.WORK / "serve"
N_IDS = 1000
CONNECTIONS = 64
SECONDS = 5 if not common.QUICK else 2
IMMUTABLE = "public, max-age=31536000, immutable"
#: The proxy without its per-request log line (a CDN in front keeps the log).
QUIET = {"PROFILED_PROXY_ACCESS_LOG": "false"}

#: The server processes behind each port, for their CPU time.
_SERVERS: dict[int, list[int]] = {}

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /a/ {{ default_type image/jpeg; etag on; }}
    }}
}}
"""


def make_files() -> tuple[Path, Path, Path]:
    """1,000 variants of about 8 KB: in a public LocalStore and as plain files."""
    from profiled.drivers.local.store import LocalStore

    data = WORK / "data"
    plain = WORK / "plain"
    paths = WORK / "paths.txt"
    if paths.exists():
        return data, plain, paths
    shutil.rmtree(WORK, ignore_errors=True)
    (plain / "a").mkdir(parents=True)
    store = LocalStore(data / "public", reactor=None)  # type: ignore[arg-type]
    big = photo((1400, 1400), 21)
    names = []
    for i in range(N_IDS):
        x, y = (i * 37) % 1200, (i * 53) % 1200
        out = io.BytesIO()
        big.crop((x, y, x + 200, y + 200)).save(out, "JPEG", quality=80, progressive=True)
        body = out.getvalue()
        image_id = f"{i:04x}" + os.urandom(14).hex()
        store._put(image_id, io.BytesIO(body), len(body), "image/jpeg", {}, IMMUTABLE)
        (plain / "a" / image_id).write_bytes(body)
        names.append(f"/a/{image_id}")
    paths.write_text("\n".join(names) + "\n")
    return data, plain, paths


@contextmanager
def profiled_proxy(
    data: Path, cpus: str | None = "0", whatif: str | None = None, **config: str
) -> Iterator[int]:
    """The proxy role; ``whatif`` names patches of bench.experiments.proxy_whatif,
    ``config`` sets PROFILED_* variables."""
    port = common.free_port()
    env = common.profiled_env(data, **config)
    args = ["--role=proxy", f"--listen=tcp:{port}:interface=127.0.0.1"]
    cmd = common.twistd(args)
    if whatif is not None:
        cmd = [sys.executable, "-m", "bench.experiments.proxy_whatif", whatif, "--", *cmd[1:]]
    with common.process(cmd, WORK / "proxy.log", env=env, cpus=cpus, cwd=common.REPO) as proc:
        common.wait_http(port)
        _SERVERS[port] = [proc.pid]
        yield port


@contextmanager
def constant(cpus: str = "0") -> Iterator[int]:
    port = common.free_port()
    cmd = [sys.executable, "-m", "bench.servers.constant", str(port)]
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    with common.process(cmd, WORK / "constant.log", env=env, cpus=cpus) as proc:
        common.wait_port(port, proc=proc)
        _SERVERS[port] = [proc.pid]
        yield port


@contextmanager
def shared_socket_proxies(data: Path, n: int) -> Iterator[int]:
    """``n`` proxy processes accepting on one socket, handed over as systemd does."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    os.set_inheritable(sock.fileno(), True)
    env = common.profiled_env(data)
    args = ["--role=proxy", "--listen=systemd:domain=INET:index=0"]
    fd = sock.fileno()
    activate = [sys.executable, "-m", "bench.servers.socket_activate", str(fd)]
    procs = []
    log = (WORK / "proxy-shared.log").open("ab")
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    activate + common.twistd(args),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    cwd=common.REPO,
                    start_new_session=True,
                )
            )
        sock.close()  # the children hold it now
        common.wait_http(port)
        _SERVERS[port] = [p.pid for p in procs]
        yield port
    finally:
        log.close()
        for p in procs:
            common.stop(p)


@contextmanager
def nginx(plain: Path, cpus: str = "0") -> Iterator[int]:
    port = common.free_port()
    (WORK / "nginx-tmp").mkdir(exist_ok=True)
    conf = WORK / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=WORK, port=port, root=plain))
    cmd = ["nginx", "-c", str(conf), "-p", str(WORK), "-e", str(WORK / "nginx-error.log")]
    with common.process(cmd, WORK / "nginx.log", cpus=cpus) as proc:
        common.wait_port(port, proc=proc)
        _SERVERS[port] = [proc.pid]
        yield port


@contextmanager
def static_file(plain: Path, cpus: str = "0") -> Iterator[int]:
    port = common.free_port()
    cmd = [sys.executable, "-m", "bench.servers.static_file", str(port), str(plain)]
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    with common.process(cmd, WORK / "static.log", env=env, cpus=cpus) as proc:
        common.wait_port(port, proc=proc)
        _SERVERS[port] = [proc.pid]
        yield port


def hammer(port: int, paths: Path, cpus: str = "1", seconds: float = SECONDS) -> dict[str, Any]:
    env = {"BENCH_PATHS": str(paths)}
    url = f"http://127.0.0.1:{port}"
    common.wrk(url, "paths.lua", CONNECTIONS, 1, env, cpus=cpus)  # warm-up
    pids = [p for root in _SERVERS.get(port, []) for p in common.tree_pids(root)]
    c0 = common.cpu_seconds(pids)
    r = common.wrk(url, "paths.lua", CONNECTIONS, seconds, env, cpus=cpus)
    cpu = common.cpu_seconds(pids) - c0
    # Requests per CPU-second of the server: what one core of its own would
    # serve, less moved by other tenants of a shared machine than req/s.
    r["cpu_s"] = cpu
    r["per_cpu_s"] = r["requests"] / cpu if cpu > 0 else None
    return r


def main() -> None:
    data, plain, paths = make_files()
    sizes = [p.stat().st_size for p in (plain / "a").iterdir()]
    runs = common.repeats(3)
    servers = {
        "profiled": lambda: profiled_proxy(data),
        "nginx": lambda: nginx(plain),
        "static_file": lambda: static_file(plain),
        "twisted_floor": lambda: constant(),
        "profiled_quiet": lambda: profiled_proxy(data, **QUIET),
        "profiled_nocache": lambda: profiled_proxy(data, PROFILED_LOCAL_PUBLIC_CACHE_MB="0"),
        "whatif_noinstrument": lambda: profiled_proxy(data, whatif="noinstrument", **QUIET),
    }
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for i in range(runs):
        for name, start in servers.items():
            with start() as port:
                status, _ = common.http_get(port, paths.read_text().split("\n", 1)[0])
                if name == "twisted_floor":
                    status = 200
                if status != 200:
                    raise RuntimeError(f"{name} answered {status}")
                r = hammer(port, paths)
            common.say(
                f"serve run {i + 1}/{runs} {name}: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.2f} ms"
            )
            raw[name].append(r)

    cores: dict[str, list[dict[str, Any]]] = {"1 process": [], "2 processes": []}
    for i in range(runs):
        for label, n in (("1 process", 1), ("2 processes", 2)):
            with shared_socket_proxies(data, n) as port:
                r = hammer(port, paths, cpus="0,1")
            common.say(f"serve every core {i + 1}/{runs} {label}: {r['rps']:.0f} req/s")
            cores[label].append(r)

    def med(rs: list[dict[str, Any]]) -> dict[str, float]:
        return {
            k: common.median([r[k] for r in rs]) for k in ("rps", "p50_ms", "p99_ms", "max_ms")
        } | {
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "per_cpu_s": common.median([r.get("per_cpu_s") or 0.0 for r in rs]),
        }

    common.save(
        "serve",
        {
            "command": ".venv/bin/python -m bench.serve",
            "ids": N_IDS,
            "mean_bytes": sum(sizes) / len(sizes),
            "connections": CONNECTIONS,
            "seconds_per_run": SECONDS,
            "runs": runs,
            "summary": {name: med(rs) for name, rs in raw.items()},
            "every_core": {label: med(rs) for label, rs in cores.items()},
            "raw": raw,
            "versions": {
                "nginx": common.tool_version(["nginx", "-v"]),
                "wrk": common.tool_version(["wrk", "-v"]),
            },
        },
    )


if __name__ == "__main__":
    main()
