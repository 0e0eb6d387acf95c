"""The whole pipeline on the local driver, as an operator runs it."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.e2e.harness import (
    Twistd,
    running,
    separate_roles,
    upload,
    wait_for_status,
    wait_until,
)
from tests.e2e.photos import looks_upright, sideways_jpeg

FAST_WORKER = {"PROFILED_WORKER_POLL_WAIT": "1", "PROFILED_WORKER_CONCURRENCY": "2"}


def assert_clean_variant(data: bytes) -> None:
    """Nothing of the upload comes back: no EXIF, GPS, comment."""
    for marker in (b"Exif", b"GPS", b"uploader-secret-comment", b"ICC_PROFILE"):
        assert marker not in data, marker


def test_all_roles_upload_to_ready_to_served(tmp_path: Path):
    """--role=all: a sideways photo becomes three upright, clean variants at /a/<id>."""
    server = Twistd(["--role=all", f"--data-dir={tmp_path / 'var'}"], tmp_path, FAST_WORKER)
    with running(server):
        r = upload(server, sideways_jpeg())
        assert r.status_code == 202, r.text
        image_id = r.json()["id"]
        assert r.headers["Location"] == f"/v1/images/{image_id}"
        assert r.json()["url"] == f"{server.url}/a/{image_id}"

        status = wait_for_status(server, image_id)
        assert status["status"] == "ready", status
        assert set(status["variants"]) == {"default", "small", "large"}

        sizes = {}
        for name, box in (("default", 200), ("small", 100), ("large", 600)):
            r = requests.get(status["variants"][name], timeout=10)
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "image/jpeg"
            assert r.headers["Content-Length"] == str(len(r.content))
            assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
            assert_clean_variant(r.content)
            w, h = looks_upright(r.content)
            assert max(w, h) == min(box, 400)  # never enlarged past the 400 px source
            sizes[name] = (w, h)
            again = requests.get(
                status["variants"][name], headers={"If-None-Match": r.headers["ETag"]}, timeout=10
            )
            assert again.status_code == 304
            assert again.content == b""
        assert sizes["small"] == (75, 100)

        assert server.delete(f"/v1/images/{image_id}").status_code == 204
        for url in status["variants"].values():
            assert requests.get(url, timeout=10).status_code == 404
        assert server.get(f"/v1/images/{image_id}").status_code == 404


def test_three_processes_share_one_data_dir(tmp_path: Path):
    """web, worker and proxy as separate processes meet only through the data dir."""
    proxy, web, worker = separate_roles(tmp_path, tmp_path / "var", FAST_WORKER)
    with running(proxy, web, worker):
        ids = []
        for _ in range(3):
            r = upload(web, sideways_jpeg())
            assert r.status_code == 202
            ids.append(r.json()["id"])
        for image_id in ids:
            status = wait_for_status(web, image_id)
            assert status["status"] == "ready"
            r = requests.get(status["url"], timeout=10)
            assert r.status_code == 200
            looks_upright(r.content)
        # Each role serves only its own paths, and the ops endpoints.
        assert web.get(f"/a/{ids[0]}").status_code == 404
        assert proxy.get(f"/v1/images/{ids[0]}").status_code == 404
        assert worker.get(f"/a/{ids[0]}").status_code == 404
        for p in (web, worker, proxy):
            assert p.get("/__heartbeat__").status_code == 200
            assert p.get("/__version__").json()["version"]
        # A DELETE through the web role is seen by the proxy process at once,
        # though it served (and holds in its read cache) every variant.
        status = wait_for_status(web, ids[1])
        for _ in range(3):
            for url in status["variants"].values():
                assert requests.get(url, timeout=10).status_code == 200
        assert web.delete(f"/v1/images/{ids[1]}").status_code == 204
        for url in status["variants"].values():
            r = requests.get(url, timeout=10)
            assert r.status_code == 404, url
            assert r.headers["Cache-Control"] == "public, max-age=60"
        assert requests.get(f"{proxy.url}/a/{ids[2]}", timeout=10).status_code == 200


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_inputs_get_api_answers(tmp_path: Path):
    """Real HTTP: wrong, lying, empty and oversized bodies get the API.md answers."""
    server = Twistd(
        ["--role=all", f"--data-dir={tmp_path / 'var'}"],
        tmp_path,
        {**FAST_WORKER, "PROFILED_WEB_MAX_BYTES": str(1024 * 1024)},
    )
    with running(server):
        cases = [
            (b"", "image/jpeg", 400, 112),
            (b"<html><script>alert(1)</script></html>", "text/html", 415, 111),
            (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, 111),
            (png(10, 10), "image/jpeg", 415, 111),
            (os.urandom(5000), "application/octet-stream", 415, 111),
            (b"\x00" * (1024 * 1024 + 1), "image/jpeg", 413, 110),
        ]
        for body, ctype, code, errno in cases:
            r = upload(server, body, ctype)
            assert r.status_code == code, (ctype, r.status_code, r.text)
            assert r.json()["errno"] == errno
        # Nothing was stored for any of them.
        originals = list((tmp_path / "var" / "private").rglob("*originals*"))
        assert originals == []


def test_truncated_image_ends_failed_with_reason(tmp_path: Path):
    """An image cut short passes the header check but ends failed: corrupt."""
    server = Twistd(["--role=all", f"--data-dir={tmp_path / 'var'}"], tmp_path, FAST_WORKER)
    data = sideways_jpeg(1200, 1600)
    with running(server):
        r = upload(server, data[: len(data) // 2])
        assert r.status_code == 202
        status = wait_for_status(server, r.json()["id"])
        assert status["status"] == "failed"
        assert status["error"] == "corrupt"
        assert server.get("/__heartbeat__").status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGKILL])
def test_worker_killed_mid_job_loses_nothing(tmp_path: Path, sig: int):
    """A worker killed while crunching: after a restart the image still ends ready."""
    data = f"--data-dir={tmp_path / 'var'}"
    env = {**FAST_WORKER, "PROFILED_WORKER_VISIBILITY_TIMEOUT": "3"}
    web = Twistd(["--role=web", data], tmp_path, name="web")
    slow = Twistd(
        ["--role=worker", data],
        tmp_path,
        name="slow-worker",
        env={**env, "PROFILED_CRUNCH_TEST_HOOKS": "1", "PROFILED_CRUNCH_TEST_DELAY": "60"},
    )
    with running(web, slow):
        image_id = upload(web, sideways_jpeg()).json()["id"]
        claimed = tmp_path / "var" / "queue" / "claimed"
        wait_until(lambda: any(claimed.iterdir()), 20, what="the job to be claimed")
        os.killpg(slow.proc.pid, sig)
        slow.proc.wait(10)
        assert wait_for_status(web, image_id, timeout=2, want=("pending",))["status"] == "pending"
        fresh = Twistd(["--role=worker", data], tmp_path, env, name="fresh-worker")
        with running(fresh):
            status = wait_for_status(web, image_id, timeout=60)
        assert status["status"] == "ready"
