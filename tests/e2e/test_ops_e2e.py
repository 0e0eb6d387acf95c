"""Operations of a real ``twistd --role=all``: /metrics moves with traffic, logs are clean JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from profiled.web.auth import token_digest
from tests.e2e.harness import Twistd, running, upload, wait_for_status
from tests.e2e.photos import sideways_jpeg

FAST_WORKER = {"PROFILED_WORKER_POLL_WAIT": "1", "PROFILED_WORKER_CONCURRENCY": "1"}
MOZLOG_KEYS = {"Timestamp", "Type", "Logger", "Hostname", "EnvVersion", "Severity", "Pid", "Fields"}
TOKEN = "e2e-secret-token-5b9d0c"
CANARY = b"profiled-e2e-canary-31f7"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Twistd) -> Samples:
    r = server.get("/metrics")
    assert r.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def canary_jpeg() -> bytes:
    """A small photo whose comment carries a marker that must never reach a log."""
    out = io.BytesIO()
    Image.new("RGB", (120, 90), (30, 140, 90)).save(out, "JPEG", quality=90, comment=CANARY)
    return out.getvalue()


def test_metrics_move_with_real_traffic(tmp_path: Path):
    """Uploads, refusals, a crunch, a failure and proxy hits all show in /metrics."""
    env = {**FAST_WORKER, "PROFILED_WEB_MAX_BYTES": str(1024 * 1024)}
    server = Twistd(["--role=all", f"--data-dir={tmp_path / 'var'}"], tmp_path, env)
    photo = sideways_jpeg()
    broken = sideways_jpeg(1200, 1600)
    broken = broken[: len(broken) // 2]
    with running(server):
        before = scrape(server)
        good = upload(server, photo)
        bad = upload(server, broken)
        assert good.status_code == bad.status_code == 202
        assert upload(server, b"plain text, not a picture" * 40).status_code == 415
        assert upload(server, b"\x00" * (1024 * 1024 + 1)).status_code == 413
        assert wait_for_status(server, good.json()["id"])["status"] == "ready"
        assert wait_for_status(server, bad.json()["id"])["status"] == "failed"
        assert requests.get(good.json()["url"], timeout=10).status_code == 200
        assert server.get("/a/" + "f" * 32).status_code == 404
        after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert delta("profiled_uploads_total", outcome="accepted", code="202") == 2
    assert delta("profiled_uploads_total", outcome="refused", code="415") == 1
    assert delta("profiled_uploads_total", outcome="refused", code="413") == 1
    assert delta("profiled_upload_bytes_total") == len(photo) + len(broken)
    assert delta("profiled_queue_receive_lag_seconds_count") == 2
    assert delta("profiled_crunch_seconds_count", format="jpeg") == 1
    assert delta("profiled_job_seconds_count") == 2
    assert delta("profiled_images_ready_total") == 1
    assert delta("profiled_images_failed_total", reason="corrupt") == 1
    assert delta("profiled_proxy_responses_total", code="200") == 1
    assert delta("profiled_proxy_responses_total", code="404") == 1
    assert delta("profiled_http_responses_total", route="api", code="202") == 2
    assert delta("profiled_backend_call_seconds_count", backend="private", op="put") >= 2
    assert delta("profiled_backend_call_seconds_count", backend="public", op="put") == 3
    assert delta("profiled_backend_call_seconds_count", backend="queue", op="send") == 2
    assert ("profiled_queue_messages", (("state", "visible"),)) in after
    assert ("profiled_queue_oldest_age_seconds", ()) in after


def test_crunch_child_restart_is_counted(tmp_path: Path):
    """A crunch child killed for its time limit is counted as a restart, and the image as failed."""
    env = {
        **FAST_WORKER,
        "PROFILED_IMAGES_CRUNCH_SECONDS": "1",
        "PROFILED_CRUNCH_TEST_HOOKS": "1",
        "PROFILED_CRUNCH_TEST_DELAY": "5",
    }
    server = Twistd(["--role=all", f"--data-dir={tmp_path / 'var'}"], tmp_path, env)
    with running(server):
        r = upload(server, sideways_jpeg())
        status = wait_for_status(server, r.json()["id"], timeout=30)
        assert (status["status"], status["error"]) == ("failed", "timeout")
        text = server.get("/metrics").text
    assert 'profiled_crunch_child_restarts_total{reason="timeout"} 1.0' in text
    assert 'profiled_images_failed_total{reason="timeout"} 1.0' in text


def log_lines(server: Twistd) -> list[dict[str, Any]]:
    """Every line twistd wrote, each parsed as JSON (a line that is not JSON fails)."""
    lines = []
    for raw in server.log_path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {raw!r}") from None
    return lines


def test_logs_are_json_without_credentials_or_image_bytes(tmp_path: Path):
    """Under twistd every line is mozlog JSON, per request and per job, with no secret or pixel."""
    env = {
        **FAST_WORKER,
        "PROFILED_AUTH_MODE": "bearer",
        "PROFILED_AUTH_TOKENS": f"alice:{token_digest(TOKEN)}",
    }
    server = Twistd(["--role=all", f"--data-dir={tmp_path / 'var'}"], tmp_path, env)
    photo = canary_jpeg()
    auth = {"Authorization": "Bearer " + TOKEN}
    with running(server):
        r = upload(server, photo, headers={**auth, "User-Agent": "ops-e2e/1"})
        assert r.status_code == 202
        image_id = r.json()["id"]
        wrong = {"Authorization": "Bearer wrong-" + TOKEN}
        assert upload(server, photo, headers=wrong).status_code == 401
        assert upload(server, CANARY * 100, headers=auth).status_code == 415
        assert wait_for_status(server, image_id)["status"] == "ready"
        assert server.get(f"/v1/images/{image_id}?access_token={TOKEN}").status_code == 200
        assert requests.get(r.json()["url"], timeout=10).status_code == 200
        assert server.delete(f"/v1/images/{image_id}", headers=auth).status_code == 204
    text = server.log_path.read_text()
    lines = log_lines(server)

    # Nothing secret, nothing of the image.
    assert TOKEN not in text
    assert "access_token" not in text
    assert CANARY.decode() not in text
    for chunk in (photo[200:232], photo[-32:]):
        assert chunk.hex() not in text
        assert chunk.decode("latin-1") not in text
        assert json.dumps(chunk.decode("latin-1"))[1:-1] not in text

    # Every line is mozlog-shaped, twistd's own (new and legacy events) included.
    assert all(set(line) == MOZLOG_KEYS for line in lines)
    types = {line["Type"] for line in lines}
    assert "log_legacy" in types  # e.g. "ProfiledSite starting on ..."
    assert any("twistd" in line["Fields"].get("msg", "") for line in lines)
    assert not any("HTTP/1.1" in line["Fields"].get("msg", "") for line in lines)

    # One structured line per answered request.
    summaries = [line["Fields"] for line in lines if line["Type"] == "request.summary"]
    seen = {(s["method"], s["path"].split("/")[1], s["status"]): s for s in summaries}
    upload_line = seen[("POST", "v1", 202)]
    assert upload_line["id"] == image_id
    assert upload_line["remote"] == "127.0.0.1"
    assert upload_line["agent"] == "ops-e2e/1"
    assert upload_line["bytes"] > 0 and upload_line["duration_ms"] >= 0
    assert seen[("GET", "a", 200)]["id"] == image_id
    assert seen[("DELETE", "v1", 204)]["id"] == image_id
    assert seen[("GET", "v1", 200)]["path"] == f"/v1/images/{image_id}"
    # Refusals answered before the body is read have their own line, with the status.
    early = [line["Fields"] for line in lines if "early" in line["Fields"].get("msg", "")]
    assert sorted(e["code"] for e in early) == [401, 415]

    # One structured line per job.
    (job,) = [line["Fields"] for line in lines if line["Fields"].get("msg", "").startswith("job ")]
    assert job["id"] == image_id
    assert job["outcome"] == "ready"
    assert job["source_format"] == "jpeg"
    assert job["attempt"] == 1
    assert isinstance(job["duration_ms"], int) and isinstance(job["crunch_ms"], int)
