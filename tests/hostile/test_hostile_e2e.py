"""The hostile corpus against a real ``twistd --role=all``: API answers, limits, slow clients.

A representative subset of the corpus goes through real HTTP; each upload
gets its API.md answer (a 4xx at once, or 202 and then ``ready`` or
``failed`` with a reason), nothing stays pending, the worker stays up, a good
image still goes ready, and the memory of the web process and of the crunch
children stays bounded. Slow clients (slowloris) are cut off by time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import images
from tests.e2e.harness import Twistd, running, upload, wait_for_status
from tests.hostile.corpus import BOMB_MEMORY_MB, Case, corpus

pytestmark = pytest.mark.e2e

BODY_TIMEOUT = 3.0
CRUNCH_SECONDS = 10.0
ENV = {
    "PROFILED_WORKER_POLL_WAIT": "1",
    "PROFILED_WORKER_CONCURRENCY": "2",
    "PROFILED_IMAGES_CRUNCH_MEMORY_MB": str(BOMB_MEMORY_MB),
    "PROFILED_IMAGES_CRUNCH_SECONDS": str(CRUNCH_SECONDS),
    "PROFILED_WEB_BODY_TIMEOUT": str(BODY_TIMEOUT),
}
#: One or more of each kind: bombs, truncations, lies, foreign bodies, polyglots, EXIF, ICC.
SUBSET = (
    "png-declared-30000x30000",
    "png-idat-expansion-7000x7000-rgba",
    "png-ztxt-64MiB",
    "apng-2^31-frames",
    "jpeg-declared-65535x65535",
    "gif-1x1-screen-huge-frame",
    "gif-frame-at-65535-65535",
    "gif-1001-frames",
    "gif-12000-frames-past-the-head",
    "webp-vp8x-max-canvas",
    "avif-declared-30000x30000",
    "jpeg-truncated-60pct",
    "webp-truncated-60pct",
    "avif-truncated-95pct",
    "png-bad-zlib",
    "jpeg-zero-components",
    "png-declared-jpeg",
    "gif-declared-webp",
    "svg-declared-png",
    "html-declared-jpeg",
    "xml-xxe-declared-octet-stream",
    "zip-then-jpeg",
    "jpeg-declared-garbage-type",
    "empty",
    "one-byte",
    "polyglot-jpeg+zip",
    "polyglot-png+html",
    "polyglot-gifar",
    "exif-orientation-65535",
    "exif-ifd-loop",
    "exif-entry-count-2^32",
    "icc-tag-count-2^32",
    "icc-2MiB-in-jpeg",
    "over-the-limit-by-one",
)


def proc_status(pid: int, field: str) -> int:
    """A figure of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def children_of(pid: int) -> list[int]:
    """Pids of the live child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    """One --role=all for the whole module, with short body and crunch limits."""
    tmp = tmp_path_factory.mktemp("hostile-e2e")
    proc = Twistd(["--role=all", f"--data-dir={tmp / 'var'}"], tmp, ENV)
    with running(proc):
        yield proc


def send(server: Twistd, case: Case) -> requests.Response:
    return upload(server, case.data, case.content_type)


def test_hostile_subset_gets_api_answers_end_to_end(server: Twistd):
    """Each hostile upload is refused with its 4xx or ends ready/failed as expected, in time."""
    cases = {c.name: c for c in corpus()}
    assert set(SUBSET) <= set(cases)
    accepted: dict[str, str] = {}
    answers: dict[str, str] = {}
    for name in SUBSET:
        case = cases[name]
        r = send(server, case)
        assert r.status_code < 500, (name, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/json", name
        if r.status_code == 202:
            accepted[name] = r.json()["id"]
        else:
            body = r.json()
            assert body["code"] == r.status_code and body["errno"] and body["message"], name
            answers[name] = str(r.status_code)
    # Everything accepted ends, within the crunch limit (and a poll) of the last upload.
    for name, image_id in accepted.items():
        status = wait_for_status(server, image_id, timeout=CRUNCH_SECONDS + 20)
        answers[name] = "ready" if status["status"] == "ready" else f"failed:{status.get('error')}"
        if status["status"] == "ready":
            for url in status["variants"].values():
                data = requests.get(url, timeout=10).content
                for needle in cases[name].forbidden:
                    assert needle not in data, (name, url, needle)
    wrong = {n: a for n, a in answers.items() if a not in cases[n].expect}
    assert wrong == {}
    assert {"ready", "failed:out_of_memory", "422", "415", "413", "400"} <= set(answers.values())


def test_worker_and_web_survive_and_stay_small(server: Twistd):
    """After the hostile subset: heartbeat 200, a good image goes ready, memory is bounded."""
    assert server.get("/__heartbeat__").status_code == 200
    r = upload(server, images.camera_jpeg((1200, 900)))
    assert r.status_code == 202
    assert wait_for_status(server, r.json()["id"], timeout=30)["status"] == "ready"
    assert server.proc is not None
    pid = server.proc.pid
    # The web process never holds a body or decodes an image: tens of MiB, not hundreds.
    assert proc_status(pid, "VmHWM") < 250 * 1024
    kids = children_of(pid)
    assert len(kids) == 2  # the crunch pool, with its out_of_memory victims replaced
    for kid in kids:
        limits = Path(f"/proc/{kid}/limits").read_text()
        assert f"Max address space         {BOMB_MEMORY_MB * 1024 * 1024}" in limits
        assert proc_status(kid, "VmPeak") <= BOMB_MEMORY_MB * 1024


def chunked_upload(server: Twistd, data: bytes, chunk: int = 65536) -> requests.Response:
    def body() -> Iterator[bytes]:
        for i in range(0, len(data), chunk):
            yield data[i : i + chunk]

    return server.post("/v1/images", data=body(), headers={"Content-Type": "image/jpeg"})


def test_chunked_body_one_byte_over_the_limit_is_413(server: Twistd):
    """A chunked body (no Content-Length) one byte over web.max_bytes gets 413, nothing stored."""
    big = next(c for c in corpus() if c.name == "over-the-limit-by-one").data
    r = chunked_upload(server, big)
    assert r.status_code == 413, r.text
    assert r.json()["errno"] == 110


def raw_connection(server: Twistd) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.settimeout(0.5)
    return s


def trickle(s: socket.socket, data: bytes, interval: float, limit: float) -> tuple[bytes, float]:
    """Send ``data`` a byte at a time until the server answers or closes; (answer, seconds)."""
    started = time.monotonic()
    answer = b""
    for i in range(len(data)):
        if time.monotonic() - started > limit:
            break
        try:
            s.sendall(data[i : i + 1])
        except OSError:
            break
        try:
            got = s.recv(65536)
        except TimeoutError:
            time.sleep(max(0.0, interval - 0.5))
            continue
        except OSError:
            break
        if not got:
            break
        answer += got
    else:
        return answer, time.monotonic() - started
    # Read what is left until the server closes.
    try:
        while chunk := s.recv(65536):
            answer += chunk
    except OSError:
        pass
    return answer, time.monotonic() - started


def test_slowloris_body_is_cut_off_by_body_timeout(server: Twistd):
    """A body trickled a byte at a time gets 408 once web.body_timeout passes, then is closed."""
    data = images.jpeg((64, 64))
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data)
    )
    with raw_connection(server) as s:
        s.sendall(head)
        answer, took = trickle(s, data, interval=0.5, limit=BODY_TIMEOUT + 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"errno": 113' in answer
    assert BODY_TIMEOUT - 0.5 <= took < BODY_TIMEOUT + 5


def test_slowloris_headers_are_cut_off(server: Twistd):
    """Headers trickled a byte at a time (each byte resets twisted's idle timeout) are cut off."""
    head = b"POST /v1/images HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: a\r\n" * 200
    with raw_connection(server) as s:
        answer, took = trickle(s, head, interval=0.5, limit=BODY_TIMEOUT + 10)
    assert took < BODY_TIMEOUT + 5, "the server still read headers after the time limit"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_idle_connection_is_closed(server: Twistd):
    """A connection that never sends a request is closed within the time limit too."""
    with raw_connection(server) as s:
        s.settimeout(BODY_TIMEOUT + 10)
        started = time.monotonic()
        try:
            answer = s.recv(1024)
        except OSError:
            answer = b""
        took = time.monotonic() - started
    assert took < BODY_TIMEOUT + 5
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
