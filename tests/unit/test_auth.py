"""The auth modes over the real request class: bearer tokens and OAuth introspection."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from profiled.config import load_settings
from profiled.errors import ConfigError
from profiled.web.auth import Gate, parse_bearer, token_digest
from profiled.web.auth_factory import build_authenticator
from profiled.web.introspection import (
    NEGATIVE_SECONDS,
    IntrospectionFailed,
    Introspector,
    OAuthIntrospection,
    VerdictCache,
    read_verdict,
)
from tests.unit.test_web_api import jpeg
from tests.unit.wire import make_harness, parse_responses, stored_original_count

SCOPE = "profile:avatar:write"
ADMIN_SCOPE = "profile:avatar:admin"


class FakeIntrospection(Resource):
    """An RFC 7662 endpoint in memory: token -> answer, or down, or hanging."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[bytes, list[bytes]]] = []
        self.auth_headers: list[bytes | None] = []
        self.status = 200
        self.raw: bytes | None = None
        self.hang = False

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        self.calls.append(dict(request.args))
        self.auth_headers.append(request.getHeader(b"authorization"))
        if self.hang:
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        if self.raw is not None:
            return self.raw
        token = request.args.get(b"token", [b""])[0].decode()
        return json.dumps(self.tokens.get(token, {"active": False})).encode()


def oauth_harness(extra: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A harness in oauth mode whose introspection endpoint is a FakeIntrospection."""
    env = {
        "PROFILED_AUTH_MODE": "oauth",
        "PROFILED_AUTH_INTROSPECTION_URL": "http://introspect.test/v1/introspect",
        "PROFILED_AUTH_ADMIN_SCOPE": ADMIN_SCOPE,
        **(extra or {}),
    }
    h = make_harness(env)
    fake = FakeIntrospection()
    fake.tokens = {
        "alice-token": {"active": True, "sub": "alice", "scope": f"openid {SCOPE}"},
        "bob-token": {"active": True, "sub": "bob", "scope": SCOPE},
        "reader-token": {"active": True, "sub": "carol", "scope": "profile:avatar:read"},
        "admin-token": {"active": True, "sub": "ops", "scope": f"{SCOPE} {ADMIN_SCOPE}"},
        "legacy-token": {"active": True, "user_id": "u-17", "scope": SCOPE},
    }
    gate_of(h).authenticator.introspector.http = StubTreq(fake)
    return h, fake


def gate_of(h) -> Gate:  # type: ignore[no-untyped-def]
    return h.site.body_policy.admit.__self__


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def principal_of(h, image_id: str) -> str:  # type: ignore[no-untyped-def]
    info, _ = h.drivers.private.objects[f"originals/{image_id}"]
    return info.metadata["principal"]


# -- parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer abc.DEF-123_~+/==", "abc.DEF-123_~+/=="),
        (b"bearer abc", "abc"),
        (b"Bearer  abc ", "abc"),
        (b"Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Bearer a b", None),
        (b"Bearer a\xffb", None),
        (b'Bearer a"b', None),
        (b"Bearer " + b"a" * 4097, None),
    ],
)
def test_parse_bearer(header, token):
    """Only a well-formed RFC 6750 bearer token of sane length is taken."""
    assert parse_bearer(header) == token


# -- bearer mode ---------------------------------------------------------------


def bearer_env() -> dict[str, str]:
    return {
        "PROFILED_AUTH_MODE": "bearer",
        "PROFILED_AUTH_TOKENS": f"alice:{token_digest('tok-a')},bob:{token_digest('tok-b')}",
        "PROFILED_AUTH_ADMIN_TOKENS": f"ops:{token_digest('tok-admin')}",
    }


def test_bearer_missing_or_unknown_token_is_401_before_the_body():
    """Without a known token an upload is refused 401 from its headers, with a challenge."""
    h = make_harness(bearer_env())
    for auth in (b"", b"Authorization: Bearer nope\r\n", b"Authorization: Basic eDp5\r\n"):
        proto, transport = h.connect()
        proto.dataReceived(
            b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\nExpect: 100-continue\r\n" + auth + b"\r\n"
        )
        [r] = parse_responses(transport.value())
        assert r.status == 401
        assert r.json()["errno"] == 100
        assert r.headers["www-authenticate"].startswith('Bearer realm="profiled"')
    assert stored_original_count(h) == 0


def test_bearer_tokens_record_principal_and_guard_delete():
    """A known token uploads as its principal; only it or an admin token deletes."""
    h = make_harness(bearer_env())
    image_id = h.upload(jpeg(), **bearer("tok-a")).json()["id"]
    assert principal_of(h, image_id) == "alice"
    path = f"/v1/images/{image_id}"
    r = h.request("DELETE", path)
    assert r.status == 401
    assert "www-authenticate" in r.headers
    assert h.request("DELETE", path, headers=bearer("tok-b")).status == 403
    assert h.request("GET", path).status == 200  # status is public
    assert h.request("DELETE", path, headers=bearer("tok-admin")).status == 204


def test_bearer_config_is_checked():
    """Malformed, duplicate or missing static tokens are refused at start, naming the key."""
    digest = token_digest("t")
    bad = [
        ({"PROFILED_AUTH_TOKENS": "alice:abc"}, "auth.tokens"),
        ({"PROFILED_AUTH_TOKENS": f"alice:{'z' * 64}"}, "auth.tokens"),
        ({"PROFILED_AUTH_TOKENS": f":{digest}"}, "auth.tokens"),
        ({"PROFILED_AUTH_TOKENS": f"a:{digest},b:{digest}"}, "auth.tokens"),
        (
            {"PROFILED_AUTH_TOKENS": f"a:{digest}", "PROFILED_AUTH_ADMIN_TOKENS": f"o:{digest}"},
            "auth.admin_tokens",
        ),
        ({}, "auth.tokens"),
    ]
    for env, key in bad:
        settings = load_settings(environ={"PROFILED_AUTH_MODE": "bearer", **env})
        with pytest.raises(ConfigError, match=key):
            build_authenticator(settings, Clock())


def test_mode_none_lets_anyone_delete():
    """With auth off everyone is 'anonymous' and may delete (the development default)."""
    h = make_harness()
    image_id = h.upload(jpeg()).json()["id"]
    assert principal_of(h, image_id) == "anonymous"
    assert h.request("DELETE", f"/v1/images/{image_id}").status == 204


# -- oauth mode ----------------------------------------------------------------


def test_oauth_good_token_uploads_as_its_subject():
    """A token that is active with the scope uploads (202) and its sub is recorded."""
    h, fake = oauth_harness()
    r = h.upload(jpeg(), **bearer("alice-token"))
    assert r.status == 202
    assert principal_of(h, r.json()["id"]) == "alice"
    [call] = fake.calls
    assert call == {b"token": [b"alice-token"], b"token_type_hint": [b"access_token"]}
    assert fake.auth_headers == [None]


def test_oauth_principal_falls_back_to_user_id():
    """A token without sub is recorded under its user_id."""
    h, _ = oauth_harness()
    r = h.upload(jpeg(), **bearer("legacy-token"))
    assert principal_of(h, r.json()["id"]) == "u-17"


def test_oauth_missing_inactive_or_unknown_token_is_401():
    """No token, an unknown one and an inactive one all get 401/100 and store nothing."""
    h, fake = oauth_harness()
    fake.tokens["old-token"] = {"active": False, "sub": "alice", "scope": SCOPE}
    for headers in ({}, bearer("nobody-knows"), bearer("old-token")):
        r = h.upload(jpeg(), **headers)
        assert r.status == 401, headers
        assert r.json()["errno"] == 100
        assert "www-authenticate" in r.headers
    assert len(fake.calls) == 2  # no token: no introspection
    assert stored_original_count(h) == 0


def test_oauth_token_without_scope_is_403():
    """An active token lacking profile:avatar:write gets 403/102 naming the scope."""
    h, _ = oauth_harness()
    r = h.upload(jpeg(), **bearer("reader-token"))
    assert r.status == 403
    assert r.json()["errno"] == 102
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert SCOPE in r.json()["message"]
    assert stored_original_count(h) == 0


@pytest.mark.parametrize(
    "doc",
    [
        {"active": "true", "sub": "x", "scope": SCOPE},
        {"active": 1, "sub": "x", "scope": SCOPE},
        {"active": True, "scope": SCOPE},
        {"active": True, "sub": "", "scope": SCOPE},
        {"active": True, "sub": "a\nb", "scope": SCOPE},
        {"active": True, "sub": "x" * 257, "scope": SCOPE},
        {"active": True, "sub": 17, "scope": SCOPE},
        {"active": True, "sub": "x", "scope": SCOPE, "exp": 999},
        {"active": True, "sub": "x", "scope": SCOPE, "nbf": 2000},
    ],
)
def test_oauth_doubtful_answers_are_not_a_yes(doc):
    """Only the JSON true, a usable principal and a current token make an active verdict."""
    verdict = read_verdict(doc, SCOPE, "", now=1000)
    assert verdict.principal is None
    assert verdict.error is not None and verdict.error.code == 401


def test_oauth_scope_must_be_a_whole_word():
    """A scope that only contains the required one as a substring does not count."""
    for scope in (f"{SCOPE}s", f"x{SCOPE}", "profile:avatar", f"{SCOPE},openid", None):
        verdict = read_verdict({"active": True, "sub": "x", "scope": scope}, SCOPE, "", 0)
        assert verdict.error is not None and verdict.error.code == 403, scope


def test_oauth_introspection_down_is_503_and_not_cached():
    """A 5xx from the introspection endpoint is 503/201 with Retry-After, asked again next time."""
    h, fake = oauth_harness()
    fake.status = 502
    r = h.upload(jpeg(), **bearer("alice-token"))
    assert r.status == 503
    assert r.json()["errno"] == 201
    assert "retry-after" in r.headers
    assert stored_original_count(h) == 0
    fake.status = 200
    assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    ("status", "raw"),
    [(401, None), (200, b"<html>"), (200, b"[true]"), (200, b'"active"'), (200, b"x" * 70000)],
)
def test_oauth_unusable_answers_are_503(status, raw):
    """A refusal of our client, non-JSON, a non-object or an oversized answer is 503, not 401."""
    h, fake = oauth_harness()
    fake.status = status
    fake.raw = raw
    r = h.upload(jpeg(), **bearer("alice-token"))
    assert r.status == 503
    assert r.json()["errno"] == 201


def test_oauth_introspection_timeout_is_503():
    """An introspection endpoint that never answers is given up after the timeout: 503."""
    h, fake = oauth_harness({"PROFILED_AUTH_INTROSPECTION_TIMEOUT": "2"})
    fake.hang = True
    proto, transport = h.connect()
    data = jpeg()
    proto.dataReceived(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Authorization: Bearer alice-token\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
    )
    assert transport.value() == b""
    h.clock.advance(1.9)
    assert transport.value() == b""
    h.clock.advance(0.2)
    [r] = parse_responses(transport.value())
    assert r.status == 503
    assert r.json()["errno"] == 201


def test_oauth_unreachable_endpoint_is_503():
    """A connection error to the introspection endpoint is a 503."""

    class Refusing:
        def post(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            from twisted.internet.error import ConnectionRefusedError

            d: Deferred[Any] = Deferred()
            d.errback(ConnectionRefusedError())
            return d

    h, _ = oauth_harness()
    gate_of(h).authenticator.introspector.http = Refusing()
    r = h.upload(jpeg(), **bearer("alice-token"))
    assert r.status == 503
    assert r.json()["errno"] == 201


def test_oauth_verdicts_are_cached_by_the_clock():
    """A good verdict is reused for cache_seconds, then asked again."""
    h, fake = oauth_harness({"PROFILED_AUTH_CACHE_SECONDS": "60"})
    for _ in range(3):
        assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    assert len(fake.calls) == 1
    h.clock.advance(59)
    assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    assert len(fake.calls) == 1
    h.clock.advance(2)
    assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    assert len(fake.calls) == 2


def test_oauth_cache_never_outlives_the_token():
    """A verdict is cached no later than the token's exp."""
    h, fake = oauth_harness({"PROFILED_AUTH_CACHE_SECONDS": "600"})
    fake.tokens["short"] = {"active": True, "sub": "x", "scope": SCOPE, "exp": 10}
    assert h.upload(jpeg(), **bearer("short")).status == 202
    h.clock.advance(9)
    assert h.upload(jpeg(), **bearer("short")).status == 202
    assert len(fake.calls) == 1
    h.clock.advance(1)
    fake.tokens["short"] = {"active": False}
    assert h.upload(jpeg(), **bearer("short")).status == 401
    assert len(fake.calls) == 2


def test_oauth_refusals_are_cached_shorter_and_refused_early():
    """A 401 verdict is cached NEGATIVE_SECONDS, and while cached refused before the body."""
    h, fake = oauth_harness({"PROFILED_AUTH_CACHE_SECONDS": "60"})
    assert h.upload(jpeg(), **bearer("fresh")).status == 401
    proto, transport = h.connect()
    proto.dataReceived(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Authorization: Bearer fresh\r\nContent-Length: 100000\r\n\r\n"
    )
    [r] = parse_responses(transport.value())
    assert r.status == 401
    assert r.headers["connection"] == "close"
    assert len(fake.calls) == 1
    fake.tokens["fresh"] = {"active": True, "sub": "late", "scope": SCOPE}
    h.clock.advance(NEGATIVE_SECONDS)
    assert h.upload(jpeg(), **bearer("fresh")).status == 202
    assert len(fake.calls) == 2


def test_oauth_cache_off_asks_every_time():
    """cache_seconds = 0 turns the cache off."""
    h, fake = oauth_harness({"PROFILED_AUTH_CACHE_SECONDS": "0"})
    assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    assert len(fake.calls) == 2


def test_verdict_cache_is_bounded_and_keyed_by_digest():
    """The cache keeps at most max_entries verdicts and never holds a token in clear."""
    h, fake = oauth_harness()
    cache = gate_of(h).authenticator.cache
    cache.max_entries = 3
    for i in range(5):
        fake.tokens[f"t{i}"] = {"active": True, "sub": f"u{i}", "scope": SCOPE}
        assert h.upload(jpeg(), **bearer(f"t{i}")).status == 202
    assert len(cache) == 3
    assert all(k not in repr(cache._entries) for k in ("t2", "t3", "t4"))
    assert cache.get(token_digest("t4")) is not None


def test_verdict_cache_expiry_uses_the_injected_clock():
    """An entry is gone once its lifetime has passed on the clock; 0 s is not stored."""
    clock = Clock()
    cache = VerdictCache(clock)
    verdict = read_verdict({"active": True, "sub": "x", "scope": SCOPE}, SCOPE, "", 0)
    cache.put("k", verdict, 5)
    cache.put("z", verdict, 0)
    assert cache.get("k") is verdict
    assert cache.get("z") is None
    clock.advance(5)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_oauth_delete_only_by_owner_or_admin_scope():
    """Another user's token gets 403; the owner's or an admin-scoped token deletes."""
    h, _ = oauth_harness()
    first = h.upload(jpeg(), **bearer("alice-token")).json()["id"]
    second = h.upload(jpeg(), **bearer("alice-token")).json()["id"]
    r = h.request("DELETE", f"/v1/images/{first}", headers=bearer("bob-token"))
    assert r.status == 403
    assert r.json()["errno"] == 102
    assert h.request("DELETE", f"/v1/images/{first}", headers=bearer("reader-token")).status == 403
    assert h.request("DELETE", f"/v1/images/{first}", headers=bearer("alice-token")).status == 204
    assert h.request("DELETE", f"/v1/images/{second}", headers=bearer("admin-token")).status == 204
    assert h.request("DELETE", f"/v1/images/{second}").status == 401


def test_oauth_admin_scope_off_by_default():
    """Without auth.admin_scope no introspected token is an admin."""
    h, _ = oauth_harness({"PROFILED_AUTH_ADMIN_SCOPE": ""})
    image_id = h.upload(jpeg(), **bearer("alice-token")).json()["id"]
    r = h.request("DELETE", f"/v1/images/{image_id}", headers=bearer("admin-token"))
    assert r.status == 403


def test_oauth_static_admin_tokens_skip_introspection():
    """An auth.admin_tokens token is an admin in oauth mode without asking the endpoint."""
    h, fake = oauth_harness({"PROFILED_AUTH_ADMIN_TOKENS": f"ops:{token_digest('break-glass')}"})
    image_id = h.upload(jpeg(), **bearer("alice-token")).json()["id"]
    calls = len(fake.calls)
    r = h.request("DELETE", f"/v1/images/{image_id}", headers=bearer("break-glass"))
    assert r.status == 204
    assert len(fake.calls) == calls


def test_oauth_status_is_public():
    """GET of an image's status needs no token in oauth mode, and asks nobody."""
    h, fake = oauth_harness()
    image_id = h.upload(jpeg(), **bearer("alice-token")).json()["id"]
    assert h.request("GET", f"/v1/images/{image_id}").status == 200
    assert len(fake.calls) == 1


def test_oauth_client_credentials_sent_as_basic():
    """Configured client credentials go to the endpoint as HTTP Basic, form-encoded first."""
    h, fake = oauth_harness(
        {
            "PROFILED_AUTH_INTROSPECTION_CLIENT_ID": "profiled",
            "PROFILED_AUTH_INTROSPECTION_CLIENT_SECRET": "s3cr:t",
        }
    )
    assert h.upload(jpeg(), **bearer("alice-token")).status == 202
    # base64("profiled:s3cr%3At")
    assert fake.auth_headers == [b"Basic cHJvZmlsZWQ6czNjciUzQXQ="]


def test_oauth_config_is_checked():
    """oauth mode without a URL, with a non-http URL, or with a bad scope is refused."""
    with pytest.raises(ConfigError, match=r"auth\.introspection_url"):
        build_authenticator(load_settings(environ={"PROFILED_AUTH_MODE": "oauth"}), Clock())
    with pytest.raises(ConfigError, match=r"auth\.introspection_url"):
        load_settings(environ={"PROFILED_AUTH_INTROSPECTION_URL": "ftp://x/"})
    with pytest.raises(ConfigError, match=r"auth\.scope"):
        load_settings(environ={"PROFILED_AUTH_SCOPE": "two scopes"})
    settings = load_settings(
        environ={
            "PROFILED_AUTH_MODE": "oauth",
            "PROFILED_AUTH_INTROSPECTION_URL": "https://auth.example/v1/introspect",
        }
    )
    assert isinstance(build_authenticator(settings, Clock()), OAuthIntrospection)


def test_introspector_failure_is_its_own_error():
    """The introspection client turns every failure into IntrospectionFailed."""
    fake = FakeIntrospection()
    fake.status = 500
    clock = Clock()
    introspector = Introspector("http://introspect.test/", StubTreq(fake), clock)
    d = Deferred.fromCoroutine(introspector.introspect("t"))
    failure = []
    d.addErrback(failure.append)
    assert failure[0].check(IntrospectionFailed)
    assert "500" in failure[0].getErrorMessage()


def test_introspector_retries_once_on_a_stale_pooled_connection():
    """A request lost on a kept-alive connection the server closed is sent once more."""
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseNeverReceived

    fake = FakeIntrospection()
    fake.tokens["t"] = {"active": True, "sub": "x", "scope": SCOPE}
    stub = StubTreq(fake)

    class StaleOnce:
        def __init__(self, failures: int) -> None:
            self.failures = failures

        def post(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                d: Deferred[Any] = Deferred()
                d.errback(Failure(ResponseNeverReceived([Failure(Exception("closed"))])))
                return d
            return stub.post(*args, **kwargs)

    clock = Clock()
    result: list[Any] = []
    introspector = Introspector("http://introspect.test/", StaleOnce(1), clock)
    Deferred.fromCoroutine(introspector.introspect("t")).addBoth(result.append)
    assert result == [{"active": True, "sub": "x", "scope": SCOPE}]
    result.clear()
    introspector = Introspector("http://introspect.test/", StaleOnce(2), clock)
    Deferred.fromCoroutine(introspector.introspect("t")).addBoth(result.append)
    assert result[0].check(IntrospectionFailed)
