"""OAuth mode end to end: twistd --role=all against an introspection server of our own."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.e2e.harness import Twistd, free_port, upload
from tests.e2e.photos import sideways_jpeg

SCOPE = "profile:avatar:write"
ADMIN_SCOPE = "profile:avatar:admin"
TOKENS: dict[str, dict[str, Any]] = {
    "alice-token": {"active": True, "sub": "alice", "scope": f"openid {SCOPE}"},
    "bob-token": {"active": True, "sub": "bob", "scope": SCOPE},
    "reader-token": {"active": True, "sub": "carol", "scope": "profile:avatar:read"},
    "admin-token": {"active": True, "sub": "ops", "scope": f"{SCOPE} {ADMIN_SCOPE}"},
    "eve-token": {"active": True, "sub": "eve", "scope": SCOPE},
    "late-token": {"active": True, "sub": "dave", "scope": SCOPE},
    "expired-token": {"active": False},
}
UPLOADS_PER_MINUTE = 3


class Introspection:
    """A small RFC 7662 endpoint on 127.0.0.1 that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/introspect"
        self.asked: list[str] = []
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                token = form.get("token", [""])[0]
                owner.asked.append(token)
                body = json.dumps(TOKENS.get(token, {"active": False})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join(10)
            self.server = None


@pytest.fixture(scope="module")
def introspection() -> Iterator[Introspection]:
    server = Introspection()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def profiled(
    introspection: Introspection, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Twistd]:
    tmp = tmp_path_factory.mktemp("auth-e2e")
    server = Twistd(
        ["--role=all", f"--data-dir={tmp / 'var'}"],
        tmp,
        {
            "PROFILED_AUTH_MODE": "oauth",
            "PROFILED_AUTH_INTROSPECTION_URL": introspection.url,
            "PROFILED_AUTH_INTROSPECTION_TIMEOUT": "3",
            "PROFILED_AUTH_ADMIN_SCOPE": ADMIN_SCOPE,
            "PROFILED_AUTH_CACHE_SECONDS": "60",
            "PROFILED_AUTH_UPLOADS_PER_MINUTE": str(UPLOADS_PER_MINUTE),
            "PROFILED_WORKER_CONCURRENCY": "1",
        },
    )
    server.start()
    try:
        yield server
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop_quietly()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def recorded_principal(server: Twistd, image_id: str) -> str:
    """The principal in the local store's manifest of the image's original."""
    [meta] = list(Path(server.workdir, "var", "private").rglob(f"*{image_id}*.meta"))
    return json.loads(meta.read_text())["metadata"]["principal"]


def test_good_token_uploads_and_records_its_subject(profiled: Twistd):
    """A token with the scope uploads (202) and its sub is stored as the principal."""
    r = upload(profiled, sideways_jpeg(), headers=bearer("alice-token"))
    assert r.status_code == 202, r.text
    assert recorded_principal(profiled, r.json()["id"]) == "alice"


def test_missing_unknown_or_inactive_token_is_401(profiled: Twistd):
    """No token, an unknown token and an inactive one get 401/100 with a Bearer challenge."""
    for headers in ({}, bearer("who-knows"), bearer("expired-token")):
        r = upload(profiled, sideways_jpeg(), headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["errno"] == 100
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="profiled"')


def test_token_without_scope_is_403(profiled: Twistd):
    """An active token lacking profile:avatar:write gets 403/102."""
    r = upload(profiled, sideways_jpeg(), headers=bearer("reader-token"))
    assert r.status_code == 403
    assert r.json()["errno"] == 102


def test_only_owner_or_admin_deletes(profiled: Twistd):
    """Another user's token is refused 403; the owner and an admin-scoped token delete."""
    first = upload(profiled, sideways_jpeg(), headers=bearer("bob-token")).json()["id"]
    second = upload(profiled, sideways_jpeg(), headers=bearer("bob-token")).json()["id"]
    assert profiled.delete(f"/v1/images/{first}").status_code == 401
    r = profiled.delete(f"/v1/images/{first}", headers=bearer("alice-token"))
    assert r.status_code == 403
    assert profiled.get(f"/v1/images/{first}").status_code == 200  # status stays public
    assert profiled.delete(f"/v1/images/{first}", headers=bearer("bob-token")).status_code == 204
    assert profiled.get(f"/v1/images/{first}").status_code == 404
    r = profiled.delete(f"/v1/images/{second}", headers=bearer("admin-token"))
    assert r.status_code == 204


def test_upload_rate_limit_is_429_with_retry_after(profiled: Twistd):
    """A principal's uploads past uploads_per_minute get 429/114 with Retry-After."""
    for _ in range(UPLOADS_PER_MINUTE):
        assert upload(profiled, sideways_jpeg(), headers=bearer("eve-token")).status_code == 202
    r = upload(profiled, sideways_jpeg(), headers=bearer("eve-token"))
    assert r.status_code == 429
    assert r.json()["errno"] == 114
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_introspection_server_stopped_is_503_not_cached(
    profiled: Twistd, introspection: Introspection
):
    """With the introspection server gone a new token gets 503/201; once back, it works."""
    introspection.stop()
    try:
        r = upload(profiled, sideways_jpeg(), headers=bearer("late-token"))
        assert r.status_code == 503, r.text
        assert r.json()["errno"] == 201
        assert "Retry-After" in r.headers
    finally:
        introspection.start()
    r = upload(profiled, sideways_jpeg(), headers=bearer("late-token"))
    assert r.status_code == 202, r.text
    assert recorded_principal(profiled, r.json()["id"]) == "dave"
