"""The upload API over the real request class, in memory (no sockets)."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

import pytest
from PIL import Image
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from profiled.ids import is_valid_id
from profiled.web.auth import token_digest
from tests.unit.wire import make_harness, stored_original_count


def jpeg(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def png(w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (30, 30, 200)).save(buf, "PNG")
    return buf.getvalue()


def noisy_jpeg() -> bytes:
    """A JPEG large for its size: random pixels do not compress."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (200, 200), bytes(random.Random(1).randbytes(120000))).save(
        buf, "JPEG", quality=95
    )
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG whose IHDR declares w x h."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00" * 64
    )


def test_upload_accepted_stores_original_and_queues_id():
    """A valid upload answers 202 with id, Location and url; the original is stored and queued."""
    h = make_harness()
    data = jpeg()
    r = h.upload(data)
    assert r.status == 202
    body = r.json()
    assert is_valid_id(body["id"])
    assert body["status"] == "pending"
    assert body["url"] == f"http://127.0.0.1:8080/a/{body['id']}"
    assert r.headers["location"] == f"/v1/images/{body['id']}"
    info, stored = h.drivers.private.objects[f"originals/{body['id']}"]
    assert stored == data
    assert info.content_type == "image/jpeg"
    assert info.metadata["principal"] == "anonymous"
    assert [e.body for e in h.drivers.queue.entries] == [body["id"]]


def test_ids_are_unique():
    """Two uploads of the same bytes get different ids."""
    h = make_harness()
    a, b = h.upload(jpeg()).json()["id"], h.upload(jpeg()).json()["id"]
    assert a != b


def test_octet_stream_is_decided_by_bytes():
    """A neutral declared type is fine: the magic bytes decide."""
    h = make_harness()
    r = h.upload(png(), "application/octet-stream")
    assert r.status == 202
    info, _ = h.drivers.private.objects[f"originals/{r.json()['id']}"]
    assert info.content_type == "image/png"


def test_chunked_upload_accepted():
    """A chunked body is accepted and stored whole."""
    h = make_harness()
    data = jpeg(300, 200)
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    r = h.request(
        "POST", "/v1/images", body, {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}
    )
    assert r.status == 202
    _, stored = h.drivers.private.objects[f"originals/{r.json()['id']}"]
    assert stored == data


@pytest.mark.parametrize(
    ("body", "ctype", "status", "errno"),
    [
        (b"", "image/jpeg", 400, 112),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>" * 2, "image/svg+xml", 415, 111),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>" * 2, "image/jpeg", 415, 111),
        (b"\x00\x01garbage" * 20, "application/octet-stream", 415, 111),
        (b"GIF89a", "image/gif", 415, 111),
        (b"PK\x03\x04" + b"\x00" * 100, "application/zip", 415, 111),
    ],
)
def test_bad_bodies_get_api_errors_and_store_nothing(body, ctype, status, errno):
    """Empty, foreign, truncated or mislabelled bodies get the API.md answer; nothing is kept."""
    h = make_harness()
    r = h.upload(body, ctype)
    assert r.status == status
    assert r.json()["errno"] == errno
    assert r.json()["code"] == status
    assert stored_original_count(h) == 0
    assert h.drivers.queue.entries == []


def test_declared_type_contradicting_bytes_is_refused():
    """PNG bytes declared as JPEG are refused with 415 naming both."""
    h = make_harness()
    r = h.upload(png(), "image/jpeg")
    assert r.status == 415
    assert "image/png" in r.json()["message"]
    assert stored_original_count(h) == 0


def test_header_over_pixel_limit_is_422_before_storing():
    """A header declaring 30000x30000 is refused with 422 and nothing stored."""
    h = make_harness()
    r = h.upload(png_header_only(30000, 30000), "image/png")
    assert r.status == 422
    assert r.json()["errno"] == 130
    assert stored_original_count(h) == 0


def test_missing_length_is_411():
    """A POST with neither Content-Length nor chunked encoding gets 411."""
    h = make_harness()
    responses, _ = h.send(
        [b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\r\n"]
    )
    assert responses[-1].status == 411
    assert json.loads(responses[-1].body)["errno"] == 101


def test_content_length_over_limit_answered_before_body():
    """A too-large Content-Length is answered 413 from the headers alone, with no 100 Continue."""
    h = make_harness({"PROFILED_WEB_MAX_BYTES": "1000"})
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 1001\r\nExpect: 100-continue\r\n\r\n"
    )
    responses, transport = h.send([head])
    assert [r.status for r in responses] == [413]
    assert json.loads(responses[0].body)["errno"] == 110
    assert responses[0].headers["connection"] == "close"
    h.clock.advance(5)
    assert transport.disconnecting
    assert stored_original_count(h) == 0


def test_chunked_body_cut_off_once_over_limit():
    """A chunked body is answered 413 as soon as it passes the limit, not at its end."""
    h = make_harness({"PROFILED_WEB_MAX_BYTES": "5000"})
    data = noisy_jpeg()
    assert len(data) > 20000
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    proto, transport = h.connect()
    proto.dataReceived(head)
    sent = 0
    for i in range(0, 6000, 1000):
        chunk = data[i : i + 1000]
        proto.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
        if transport.value():
            break
    assert sent <= 6000 < len(data)
    from tests.unit.wire import parse_responses

    [r] = parse_responses(transport.value())
    assert r.status == 413
    assert stored_original_count(h) == 0


def test_slow_body_is_cut_off():
    """A body that has not arrived within body_timeout gets 408 and the connection closes."""
    h = make_harness({"PROFILED_WEB_BODY_TIMEOUT": "3"})
    data = jpeg()
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data)
    )
    proto, transport = h.connect()
    proto.dataReceived(head + data[:10])
    for i in range(10, 20):
        h.clock.advance(0.5)
        proto.dataReceived(data[i : i + 1])
    assert transport.disconnecting
    from tests.unit.wire import parse_responses

    [r] = parse_responses(transport.value())
    assert r.status == 408
    assert stored_original_count(h) == 0


def test_store_down_is_503_and_nothing_queued():
    """With the private store down: 503 with Retry-After, nothing queued."""
    h = make_harness()
    h.drivers.private.down = True
    r = h.upload(jpeg())
    assert r.status == 503
    assert r.json()["errno"] == 201
    assert "retry-after" in r.headers
    assert h.drivers.queue.entries == []


def test_queue_down_is_503_and_original_removed():
    """With the queue down: retried, then 503, and the stored original is removed."""
    h = make_harness()
    h.drivers.queue.down = True
    proto, transport = h.connect()
    data = jpeg()
    proto.dataReceived(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    for _ in range(10):
        h.clock.advance(1)
    from tests.unit.wire import parse_responses

    [r] = parse_responses(transport.value())
    assert r.status == 503
    assert stored_original_count(h) == 0


def test_status_pending_ready_failed_and_unknown():
    """GET reports pending, then ready with variants, failed with a reason, and 404s."""
    h = make_harness()
    image_id = h.upload(jpeg()).json()["id"]
    r = h.request("GET", f"/v1/images/{image_id}")
    assert r.status == 200
    assert r.json() == {
        "id": image_id,
        "status": "pending",
        "url": f"http://127.0.0.1:8080/a/{image_id}",
        "variants": {},
    }
    h.drivers.public.put(image_id, io.BytesIO(b"x"), 1, "image/jpeg")
    body = h.request("GET", f"/v1/images/{image_id}").json()
    assert body["status"] == "ready"
    assert body["variants"] == {
        "default": f"http://127.0.0.1:8080/a/{image_id}",
        "small": f"http://127.0.0.1:8080/a/{image_id}_small",
        "large": f"http://127.0.0.1:8080/a/{image_id}_large",
    }
    other = h.upload(jpeg()).json()["id"]
    record = b'{"reason": "corrupt", "detail": "x"}'
    h.drivers.private.put(f"failures/{other}", io.BytesIO(record), len(record), "application/json")
    body = h.request("GET", f"/v1/images/{other}").json()
    assert body["status"] == "failed"
    assert body["error"] == "corrupt"
    for path in (
        "/v1/images/" + "0" * 32,
        "/v1/images/xyz",
        "/v1/images/" + "A" * 32,
        "/v1/images/../etc",
    ):
        r = h.request("GET", path)
        assert r.status == 404, path
        assert r.json()["errno"] == 120


def test_delete_removes_everything():
    """DELETE answers 204 and afterwards the image and its variants are gone."""
    h = make_harness()
    image_id = h.upload(jpeg()).json()["id"]
    for key in (image_id, f"{image_id}_small", f"{image_id}_large"):
        h.drivers.public.put(key, io.BytesIO(b"x"), 1, "image/jpeg")
    r = h.request("DELETE", f"/v1/images/{image_id}")
    assert r.status == 204
    assert h.drivers.public.objects == {}
    assert stored_original_count(h) == 0
    assert h.request("GET", f"/v1/images/{image_id}").status == 404
    assert h.request("DELETE", f"/v1/images/{image_id}").status == 404


def test_wrong_method_is_405_json():
    """A known path with a wrong method gets the JSON 405."""
    h = make_harness()
    r = h.request("PUT", "/v1/images", b"x", {"Content-Type": "image/jpeg"})
    assert r.status == 405
    assert r.json()["errno"] == 121
    r = h.request("GET", "/v1/images")
    assert r.status == 405


def test_unknown_path_is_404_json():
    """Paths no role claims are JSON 404s."""
    h = make_harness()
    for path in ("/v2/images", "/nope", "/v1/images/a/b"):
        r = h.request("GET", path)
        assert r.status == 404, path
        assert r.json()["errno"] == 120


def test_bearer_auth_records_principal_and_guards_delete():
    """With bearer tokens: 401 without, principal recorded, only owner or admin deletes."""
    env = {
        "PROFILED_AUTH_MODE": "bearer",
        "PROFILED_AUTH_TOKENS": f"alice:{token_digest('tok-a')},bob:{token_digest('tok-b')}",
        "PROFILED_AUTH_ADMIN_TOKENS": f"ops:{token_digest('tok-admin')}",
    }
    h = make_harness(env)
    assert h.upload(jpeg()).status == 401
    assert h.upload(jpeg(), Authorization="Bearer wrong").status == 401
    r = h.upload(jpeg(), Authorization="Bearer tok-a")
    assert r.status == 202
    image_id = r.json()["id"]
    info, _ = h.drivers.private.objects[f"originals/{image_id}"]
    assert info.metadata["principal"] == "alice"
    path = f"/v1/images/{image_id}"
    assert h.request("DELETE", path).status == 401
    r = h.request("DELETE", path, headers={"Authorization": "Bearer tok-b"})
    assert r.status == 403
    assert r.json()["errno"] == 102
    assert h.request("DELETE", path, headers={"Authorization": "Bearer tok-a"}).status == 204
    other = h.upload(jpeg(), Authorization="Bearer tok-b").json()["id"]
    r = h.request("DELETE", f"/v1/images/{other}", headers={"Authorization": "Bearer tok-admin"})
    assert r.status == 204


def test_non_upload_bodies_are_capped():
    """Bodies sent to other routes are capped small (413), never buffered at length."""
    h = make_harness()
    r = h.request("DELETE", "/v1/images/" + "0" * 32, b"x" * 70000)
    assert r.status == 413


# -- uploads spooled into a local private store, which adopts them


def local_harness(tmp_path, env: dict[str, str] | None = None):
    """The harness with a LocalStore as its private store; also its tmp/."""
    from profiled.drivers.local.store import LocalStore

    root = tmp_path / "private"
    return make_harness(env, private=lambda clock: LocalStore(root, reactor=clock)), root / "tmp"


def test_local_store_adopts_the_spooled_upload(tmp_path):
    """With a local private store the body is spooled into its tmp/ and adopted: the
    original reads back whole, nothing stays in tmp/, the id is queued."""
    h, tmp = local_harness(tmp_path)
    data = noisy_jpeg()
    r = h.upload(data)
    assert r.status == 202
    image_id = r.json()["id"]
    obj = h.drivers.private.get(f"originals/{image_id}").result
    out = io.BytesIO()
    from profiled.drivers.consumers import FileConsumer

    obj.deliver(FileConsumer(out))
    assert out.getvalue() == data
    assert obj.info.metadata["principal"] == "anonymous"
    assert obj.info.content_type == "image/jpeg"
    assert [e.body for e in h.drivers.queue.entries] == [image_id]
    assert list(tmp.iterdir()) == []


def test_refused_or_cut_off_uploads_leave_no_spooled_file(tmp_path):
    """A body refused mid-way, one refused by the route (429) and one whose client
    hangs up mid-way all leave tmp/ empty."""
    h, tmp = local_harness(tmp_path, {"PROFILED_WEB_MAX_BYTES": "20000"})
    data = noisy_jpeg()
    chunks = [data[i : i + 8000] for i in range(0, len(data), 8000)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    headers = {"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"}
    assert h.request("POST", "/v1/images", body, headers).status == 413
    assert list(tmp.iterdir()) == []
    h, tmp = local_harness(tmp_path, {"PROFILED_AUTH_UPLOADS_PER_MINUTE": "1"})
    assert h.upload(jpeg()).status == 202
    assert h.upload(jpeg()).status == 429
    proto, _ = h.connect()
    data = noisy_jpeg()
    proto.dataReceived(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(data), data[:5000])
    )
    assert len(list(tmp.iterdir())) == 1
    proto.connectionLost(Failure(ConnectionDone()))
    assert list(tmp.iterdir()) == []
    assert stored_original_count_local(tmp.parent) == 1


def test_spooling_into_a_broken_local_store_is_503(tmp_path):
    """When the store's tmp/ cannot take the body: 503 with Retry-After, nothing kept."""
    h, tmp = local_harness(tmp_path)
    tmp.rmdir()
    tmp.write_bytes(b"not a directory")
    r = h.upload(jpeg())
    assert r.status == 503
    assert r.json()["errno"] == 201 and "retry-after" in r.headers
    assert h.drivers.queue.entries == []
    assert stored_original_count_local(tmp.parent) == 0


def stored_original_count_local(root) -> int:
    return sum(1 for p in (root / "objects").rglob("originals*.meta"))
