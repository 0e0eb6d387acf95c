"""The image proxy and the operations endpoints, in memory."""

from __future__ import annotations

import io
import json

import pytest

from tests.unit.wire import make_harness

ID = "0123456789abcdef0123456789abcdef"


def publish(h, name: str, data: bytes = b"\xff\xd8fakejpeg", ctype: str = "image/jpeg"):
    h.drivers.public.put(name, io.BytesIO(data), len(data), ctype)


def test_serves_each_variant_with_contract_headers():
    """Each variant comes back with exact type, length, strong ETag and immutable caching."""
    h = make_harness()
    for name, data in ((ID, b"default"), (ID + "_small", b"small!"), (ID + "_large", b"large!!")):
        publish(h, name, data)
        r = h.request("GET", "/a/" + name)
        assert r.status == 200
        assert r.body == data
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["content-length"] == str(len(data))
        assert r.headers["etag"].startswith('"') and not r.headers["etag"].startswith("W/")
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"


def test_head_has_headers_and_no_body():
    """HEAD gives the same headers as GET and no body."""
    h = make_harness()
    publish(h, ID, b"12345")
    r = h.request("HEAD", "/a/" + ID)
    assert r.status == 200
    assert r.headers["content-length"] == "5"
    assert r.body == b""


def test_if_none_match_gives_304():
    """A matching If-None-Match (also weak, in a list, or *) gives 304 without a body."""
    h = make_harness()
    publish(h, ID, b"12345")
    etag = h.request("GET", "/a/" + ID).headers["etag"]
    for inm in (etag, "W/" + etag, f'"other", {etag}', "*"):
        r = h.request("GET", "/a/" + ID, headers={"If-None-Match": inm})
        assert r.status == 304, inm
        assert r.body == b""
        assert r.headers["etag"] == etag
    assert h.request("GET", "/a/" + ID, headers={"If-None-Match": '"nope"'}).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/a/" + ID.upper(),
        "/a/" + ID[:-1],
        "/a/" + ID + "_huge",
        "/a/" + ID + "_default",
        "/a/" + ID + "/",
        "/a/" + ID + "%5fsmall",
        "/a/%2e%2e/%2e%2e/etc/passwd",
        "/a/../v1/images",
        "/a/..%2foriginals%2f" + ID,
        "/a/originals/" + ID,
        "/a/failures/" + ID,
        "/a/",
        "/a",
        "/a/" + ID + ".jpg",
    ],
)
def test_malformed_names_are_404_without_touching_store(path):
    """Malformed names, escapes and private keys are 404 even with the store down."""
    h = make_harness()
    h.drivers.private.put("originals/" + ID, io.BytesIO(b"secret"), 6, "image/jpeg")
    h.drivers.public.down = True
    r = h.request("GET", path)
    assert r.status == 404, path
    assert b"secret" not in r.raw
    assert "max-age=60" in r.headers["cache-control"]


def test_unknown_id_is_404_with_short_cache():
    """A well-formed id that does not exist is a 404 cached briefly."""
    h = make_harness()
    r = h.request("GET", "/a/" + ID)
    assert r.status == 404
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_private_store_never_reachable():
    """No path reaches an original, even one whose key looks like a public name."""
    h = make_harness()
    h.drivers.private.put(ID, io.BytesIO(b"secret"), 6, "image/jpeg")
    h.drivers.private.put("originals/" + ID, io.BytesIO(b"secret"), 6, "image/jpeg")
    for path in ("/a/" + ID, "/v1/images/" + ID, "/originals/" + ID, "/private/" + ID):
        assert b"secret" not in h.request("GET", path).raw


def test_non_image_objects_are_not_served():
    """Something in the public store that is not an image we make is never served."""
    h = make_harness()
    publish(h, ID, b"<script>alert(1)</script>", "text/html")
    r = h.request("GET", "/a/" + ID)
    assert r.status == 404
    assert b"<script>" not in r.raw


def test_store_down_is_503():
    """A store outage on a valid name is a 503 with Retry-After, not a 500."""
    h = make_harness()
    h.drivers.public.down = True
    r = h.request("GET", "/a/" + ID)
    assert r.status == 503
    assert "retry-after" in r.headers


def test_dockerflow_endpoints():
    """lbheartbeat, heartbeat and version answer JSON; heartbeat names what is down."""
    h = make_harness()
    assert h.request("GET", "/__lbheartbeat__").status == 200
    r = h.request("GET", "/__heartbeat__")
    assert r.status == 200
    assert json.loads(r.body)["checks"] == {
        "private_store": "ok",
        "queue": "ok",
        "public_store": "ok",
    }
    h.drivers.queue.down = True
    r = h.request("GET", "/__heartbeat__")
    assert r.status == 503
    assert json.loads(r.body)["checks"]["queue"].startswith("error")
    assert json.loads(r.body)["checks"]["private_store"] == "ok"
    version = json.loads(h.request("GET", "/__version__").body)
    assert set(version) >= {"version", "commit"}


def test_metrics_count_proxy_responses():
    """/metrics is Prometheus text and counts proxy answers by status."""
    h = make_harness()
    publish(h, ID)
    h.request("GET", "/a/" + ID)
    h.request("GET", "/a/nope")
    r = h.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.body.decode()
    assert 'profiled_proxy_responses_total{code="200"} 1.0' in text
    assert 'profiled_proxy_responses_total{code="404"} 1.0' in text


def test_any_store_error_is_503_never_500():
    """A store error other than NotFound (say, access denied) is a 503, not a 500."""
    from twisted.internet import defer

    from profiled.errors import ProfiledError

    class Denied(ProfiledError):
        pass

    h = make_harness()
    h.drivers.public.get = lambda key: defer.fail(Denied("AccessDenied"))
    r = h.request("GET", "/a/" + ID)
    assert r.status == 503
    assert json.loads(r.body)["errno"] == 201
    assert b"Traceback" not in r.raw
