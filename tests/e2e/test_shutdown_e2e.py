"""SIGTERM to a busy ``twistd --role=all``: a graceful stop, and nothing accepted is lost."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import requests

from tests import images
from tests.e2e.harness import Twistd, running, upload, wait_for_status, wait_until
from tests.faults.chaos import crunch_children

ENV = {
    "PROFILED_WORKER_POLL_WAIT": "0.5",
    "PROFILED_WORKER_CONCURRENCY": "2",
    "PROFILED_WORKER_VISIBILITY_TIMEOUT": "5",
    "PROFILED_WORKER_RETRY_DELAY": "0.3",
}


def slow_upload(port: int, data: bytes, first: int, pause: threading.Event) -> bytes:
    """Send the headers and ``first`` bytes, wait for ``pause``, send the rest; the answer."""
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head + data[:first])
        pause.wait(30)
        s.sendall(data[first:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_sigterm_while_busy_finishes_in_flight_work_and_loses_nothing(tmp_path: Path):
    """SIGTERM mid-upload and mid-crunch: the listener closes, the upload gets its 202, jobs
    finish or go back to the queue, the exit is clean, and after a restart all end ready."""
    var = tmp_path / "var"
    busy = Twistd(
        ["--role=all", f"--data-dir={var}"],
        tmp_path,
        {**ENV, "PROFILED_CRUNCH_TEST_HOOKS": "1", "PROFILED_CRUNCH_TEST_DELAY": "2"},
        name="busy",
    )
    accepted: list[str] = []
    with running(busy):
        assert busy.proc is not None
        wait_until(lambda: len(crunch_children(busy.proc.pid)) == 2, 20, what="the children")
        time.sleep(1.5)  # they have imported Pillow and said they are ready
        for _ in range(5):
            r = upload(busy, images.jpeg((300, 200)))
            assert r.status_code == 202
            accepted.append(r.json()["id"])
        wait_until(
            lambda: len(list((var / "queue" / "claimed").iterdir())) == 2,
            20,
            what="two jobs running",
        )
        data = images.camera_jpeg((800, 600))
        go_on = threading.Event()
        answers: list[bytes] = []
        sender = threading.Thread(
            target=lambda: answers.append(slow_upload(busy.port, data, 1000, go_on))
        )
        sender.start()
        time.sleep(0.5)  # the upload is in flight; two jobs are in their children
        busy.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", busy.port), timeout=1).close()
            except OSError:
                return True
            return False

        wait_until(refused, 5, interval=0.05, what="the listener to close")
        go_on.set()
        sender.join(30)
        status = busy.proc.wait(40)
        took = time.monotonic() - started
    assert status in (0, -signal.SIGTERM), status  # twistd re-raises SIGTERM after the stop
    assert took < 30, took
    [answer] = answers
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]
    accepted.append(answer.rsplit(b'"id": "', 1)[1][:32].decode())
    log = busy.log_path.read_text()
    assert "Traceback" not in log and "Unhandled error" not in log
    # The two jobs in children finished during the stop; the rest stayed queued.
    assert log.count("job ") and '"outcome":"ready"' in log
    # Nothing is claimed by the dead process for ever: it finished or gave jobs back.
    claimed = list((var / "queue" / "claimed").iterdir())
    assert claimed == [], claimed

    fresh = Twistd(["--role=all", f"--data-dir={var}"], tmp_path, ENV, name="fresh")
    with running(fresh):
        for image_id in accepted:
            status_body = wait_for_status(fresh, image_id, timeout=30)
            assert status_body["status"] == "ready", status_body
            assert requests.get(status_body["url"], timeout=10).status_code == 200
