"""Inputs that schemathesis (tests/e2e/test_schemathesis.py) once found failing, kept as tests."""

from __future__ import annotations

import io

import pytest

from tests.unit.test_web_api import jpeg
from tests.unit.wire import make_harness

OPS = ("/__heartbeat__", "/__lbheartbeat__", "/__version__", "/metrics")


@pytest.mark.parametrize("path", [*OPS, "/a/" + "0" * 32])
@pytest.mark.parametrize("method", ["TRACE", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_undeclared_method_is_json_405(method, path):
    """A method a non-API resource lacks gets the JSON 405/121 with Allow, never a 501."""
    h = make_harness()
    r = h.request(method, path)
    assert r.status == 405
    assert r.json() == {
        "code": 405,
        "errno": 121,
        "error": "Method Not Allowed",
        "message": "method not allowed on this path",
    }
    assert "GET" in r.headers["allow"]
    assert r.headers["content-type"] == "application/json"


def test_head_is_still_answered_from_get():
    """HEAD on a GET-only resource is still answered 200, without a body."""
    h = make_harness()
    r = h.request("HEAD", "/__version__")
    assert r.status == 200


def test_status_is_404_once_deleted_even_if_a_racing_worker_put_variants_back():
    """After DELETE, GET /v1/images/<id> is 404 even while a racing worker's variants linger."""
    h = make_harness()
    image_id = h.upload(jpeg()).json()["id"]
    assert h.request("DELETE", f"/v1/images/{image_id}").status == 204
    # A worker that read the original before the DELETE publishes after it,
    # and only then notices the original is gone and takes its variants back.
    for key in (f"{image_id}_small", f"{image_id}_large", image_id):
        h.drivers.public.put(key, io.BytesIO(b"x"), 1, "image/jpeg")
    r = h.request("GET", f"/v1/images/{image_id}")
    assert r.status == 404
    assert r.json()["errno"] == 120
