"""Start profiled the way an operator does, for end-to-end tests.

``Twistd`` runs ``twistd -n profiled ...`` from the test virtualenv as a
real child process, with the repository's own code first on its path,
waits until ``/__lbheartbeat__`` answers, and stops it with SIGTERM (or
kills it). Every wait is bounded; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
TWISTD = Path(sys.executable).with_name("twistd")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, OSError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Twistd:
    """One ``twistd -n profiled`` process."""

    def __init__(
        self,
        args: list[str],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        name: str = "profiled",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.args = args
        self.workdir = workdir
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PROFILED_LOG_FORMAT": "json",
            "AWS_EC2_METADATA_DISABLED": "true",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Twistd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(TWISTD),
            "--nodaemon",
            "--pidfile=",
            "profiled",
            f"--listen=tcp:{self.port}:interface=127.0.0.1",
            *self.args,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._ready, timeout, what=f"{self.name} to answer on {self.url}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        return requests.get(self.url + "/__lbheartbeat__", timeout=2).status_code == 200

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit status (SIGKILL after timeout)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout}s") from None

    def stop_quietly(self) -> None:
        """Stop without failing the test (clean-up path)."""
        try:
            self.stop(timeout=20)
        except AssertionError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group (twistd and its crunch children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return requests.delete(self.url + path, timeout=kw.pop("timeout", 10), **kw)


@contextmanager
def running(*processes: Twistd) -> Iterator[tuple[Twistd, ...]]:
    """Start the processes in order; always stop them, showing logs on failure."""
    started: list[Twistd] = []
    try:
        for p in processes:
            started.append(p.start())
        yield processes
    except BaseException:
        for p in started:
            sys.stderr.write(f"--- {p.name} log ---\n{p.log_tail()}\n")
        raise
    finally:
        for p in reversed(started):
            p.stop_quietly()


def separate_roles(
    workdir: Path, data_dir: Path, worker_env: Mapping[str, str] | None = None
) -> tuple[Twistd, Twistd, Twistd]:
    """proxy, web and worker as three processes sharing one data dir (not started).

    The web role's URLs point at the proxy, as in a real deployment.
    """
    data = f"--data-dir={data_dir}"
    proxy = Twistd(["--role=proxy", data], workdir, name="proxy")
    web = Twistd(
        ["--role=web", data],
        workdir,
        name="web",
        env={"PROFILED_WEB_IMAGE_URL": f"{proxy.url}/a/{{id}}"},
    )
    worker = Twistd(["--role=worker", data], workdir, worker_env, name="worker")
    return proxy, web, worker


def upload(
    server: Twistd, data: bytes, content_type: str = "image/jpeg", **kw: Any
) -> requests.Response:
    """POST raw bytes to /v1/images."""
    headers = {"Content-Type": content_type, **kw.pop("headers", {})}
    return server.post("/v1/images", data=data, headers=headers, **kw)


def wait_for_status(
    server: Twistd,
    image_id: str,
    timeout: float = 60.0,
    want: tuple[str, ...] = ("ready", "failed"),
) -> dict[str, Any]:
    """Poll GET /v1/images/<id> until its status is one of ``want``."""

    def check() -> dict[str, Any] | None:
        r = server.get(f"/v1/images/{image_id}")
        if r.status_code == 200 and r.json()["status"] in want:
            return r.json()
        return None

    return wait_until(check, timeout, interval=0.1, what=f"{image_id} to be {'/'.join(want)}")
