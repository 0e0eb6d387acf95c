"""OAuth 2.0 token introspection (RFC 7662) as an authenticator.

For each bearer token the introspection endpoint (``auth.introspection_url``)
is sent ``POST token=<token>&token_type_hint=access_token``, form-encoded,
with HTTP Basic client credentials if configured, through treq on the
reactor (never blocking), abandoned after ``auth.introspection_timeout``.

The verdict:

- a 200 JSON object with ``"active": true`` (the JSON boolean, nothing
  else), not past its ``exp`` nor before its ``nbf``, naming a principal:
  the token is good. The principal is ``sub``, else ``user_id``, else
  ``username`` (1-256 characters, no control characters). It must carry
  ``auth.scope`` among its space-separated ``scope``, else 403; with
  ``auth.admin_scope`` too, it is an admin (may delete any image).
- active false, or no usable principal: 401.
- the endpoint unreachable, too slow, answering other than 200, or with
  anything but a JSON object: 503 (errno 201). The client is not at fault
  and the token may be fine: this is neither a 401 nor cached.

Verdicts are cached by the SHA-256 of the token (the token itself is never
kept) for ``auth.cache_seconds``, never past the token's ``exp``; refusals
for at most ``NEGATIVE_SECONDS``, so a token that was just issued (and not
yet known to a lagging introspection replica) is not locked out for long.
The cache holds at most ``MAX_ENTRIES`` verdicts, least recently used
first out.

Admin tokens configured in ``auth.admin_tokens`` are honoured in this mode
too, checked by digest before any introspection.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from typing import Any, TypeGuard
from urllib.parse import quote

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.iweb import IRequest, IResponse

from profiled.config import AuthSettings
from profiled.errors import ConfigError
from profiled.web import errors
from profiled.web.auth import (
    Principal,
    bearer_token,
    insufficient_scope,
    lookup_digest,
    parse_token_entries,
    unauthorized,
    usable_principal,
)
from profiled.web.errors import APIError

#: Longest time a refusal (401, 403) is cached, seconds.
NEGATIVE_SECONDS = 5.0
#: Verdicts cached at most.
MAX_ENTRIES = 10_000
#: Largest introspection answer read, bytes.
MAX_RESPONSE_BYTES = 64 * 1024
#: Claims that name the principal, in order of preference.
PRINCIPAL_CLAIMS = ("sub", "user_id", "username")
#: Failures of a request on a kept-alive connection that the server closed.
STALE_CONNECTION = (ResponseNeverReceived, RequestTransmissionFailed)


class IntrospectionFailed(Exception):
    """The introspection endpoint gave no usable answer (not the token's fault)."""


class _TooLarge(Exception):
    pass


@attrs.frozen
class Verdict:
    """What introspection said about one token."""

    principal: Principal | None
    error: APIError | None
    #: The token's ``exp`` (seconds since the epoch), if it said.
    expires: float | None = None


def read_verdict(doc: dict[str, Any], scope: str, admin_scope: str, now: float) -> Verdict:
    """Judge an introspection answer (a JSON object)."""
    if doc.get("active") is not True:
        return Verdict(None, unauthorized("the token is not active"))
    exp, nbf = doc.get("exp"), doc.get("nbf")
    if _is_number(exp) and exp <= now:
        return Verdict(None, unauthorized("the token has expired"))
    if _is_number(nbf) and nbf > now:
        return Verdict(None, unauthorized("the token is not valid yet"))
    name = next((doc[c] for c in PRINCIPAL_CLAIMS if usable_principal(doc.get(c))), None)
    if name is None:
        return Verdict(None, unauthorized("the token names no principal"))
    granted = doc.get("scope")
    scopes = set(granted.split(" ")) if isinstance(granted, str) else set()
    if scope not in scopes:
        return Verdict(None, insufficient_scope(scope))
    admin = bool(admin_scope) and admin_scope in scopes
    return Verdict(Principal(name, admin=admin), None, exp if _is_number(exp) else None)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.define
class Introspector:
    """Asks the introspection endpoint about one token."""

    url: str
    http: HTTPClient
    clock: IReactorTime
    timeout: float = 5.0
    client_id: str = ""
    client_secret: str = ""

    async def introspect(self, token: str) -> dict[str, Any]:
        """The endpoint's JSON object; IntrospectionFailed on any failure of its own."""
        d = Deferred.fromCoroutine(self._call(token))
        d.addTimeout(self.timeout, self.clock)
        try:
            return await d
        except IntrospectionFailed:
            raise
        except Exception as e:
            raise IntrospectionFailed(f"{type(e).__name__}: {e}") from e

    async def _call(self, token: str) -> dict[str, Any]:
        headers: dict[bytes | str, list[bytes | str]] = {b"accept": [b"application/json"]}
        if self.client_id:
            # RFC 6749 section 2.3.1: form-encode, then Basic.
            pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers[b"authorization"] = [b"Basic " + base64.b64encode(pair.encode())]
        data = {"token": token, "token_type_hint": "access_token"}
        try:
            response: IResponse = await self.http.post(self.url, data=data, headers=headers)
        except STALE_CONNECTION as e:
            if any(reason.check(CancelledError) for reason in e.reasons):
                raise  # our own timeout, not a stale connection
            # A pooled connection the server had just closed: once more, on a new one.
            response = await self.http.post(self.url, data=data, headers=headers)
        body = await _read_capped(response)
        if response.code != 200:
            raise IntrospectionFailed(f"the endpoint answered {response.code}")
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise IntrospectionFailed("the endpoint's answer is not JSON") from e
        if not isinstance(doc, dict):
            raise IntrospectionFailed("the endpoint's answer is not a JSON object")
        return doc


async def _read_capped(response: IResponse) -> bytes:
    """The body of ``response``; IntrospectionFailed past MAX_RESPONSE_BYTES."""
    parts: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > MAX_RESPONSE_BYTES:
            raise _TooLarge()
        parts.append(data)

    try:
        await treq.collect(response, collect)
    except _TooLarge as e:
        raise IntrospectionFailed("the endpoint's answer is too large") from e
    return b"".join(parts)


class VerdictCache:
    """Verdicts by token digest, each with its own expiry; bounded, LRU."""

    def __init__(self, clock: IReactorTime, max_entries: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Verdict | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, verdict = entry
        if self.clock.seconds() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return verdict

    def put(self, key: str, verdict: Verdict, seconds: float) -> None:
        if seconds <= 0:
            return
        self._entries[key] = (self.clock.seconds() + seconds, verdict)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@attrs.define
class OAuthIntrospection:
    """The ``oauth`` auth mode."""

    introspector: Introspector
    clock: IReactorTime
    scope: str
    admin_scope: str = ""
    cache_seconds: float = 60.0
    #: Static admin tokens (digest -> principal), honoured without introspection.
    admins: dict[str, Principal] = attrs.Factory(dict)
    cache: VerdictCache = attrs.Factory(lambda self: VerdictCache(self.clock), takes_self=True)
    enforced: bool = True
    log = Logger()

    @classmethod
    def from_settings(
        cls, settings: AuthSettings, http: HTTPClient, clock: IReactorTime
    ) -> OAuthIntrospection:
        if not settings.introspection_url:
            raise ConfigError("auth.introspection_url: oauth mode needs the introspection URL")
        if not settings.scope:
            raise ConfigError("auth.scope: oauth mode needs the scope tokens must carry")
        introspector = Introspector(
            settings.introspection_url,
            http,
            clock,
            settings.introspection_timeout,
            settings.introspection_client_id,
            settings.introspection_client_secret,
        )
        return cls(
            introspector,
            clock,
            settings.scope,
            settings.admin_scope,
            settings.cache_seconds,
            parse_token_entries("auth.admin_tokens", settings.admin_tokens, admin=True),
        )

    def early(self, token: str | None) -> APIError | None:
        if token is None:
            return unauthorized()
        if lookup_digest(self.admins, token) is not None:
            return None
        verdict = self.cache.get(_cache_key(token))
        return None if verdict is None else verdict.error

    async def authenticate(self, request: IRequest) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise unauthorized()
        admin = lookup_digest(self.admins, token)
        if admin is not None:
            return admin
        key = _cache_key(token)
        verdict = self.cache.get(key)
        if verdict is None:
            verdict = await self._ask(token)
            self.cache.put(key, verdict, self._lifetime(verdict))
        if verdict.error is not None:
            raise verdict.error
        assert verdict.principal is not None
        return verdict.principal

    async def _ask(self, token: str) -> Verdict:
        try:
            doc = await self.introspector.introspect(token)
        except IntrospectionFailed as e:
            self.log.warn("token introspection failed: {error}", error=str(e))
            raise errors.unavailable(
                "the token introspection service is unavailable; nothing was stored"
            ) from e
        return read_verdict(doc, self.scope, self.admin_scope, self.clock.seconds())

    def _lifetime(self, verdict: Verdict) -> float:
        seconds = self.cache_seconds
        if verdict.error is not None:
            return min(seconds, NEGATIVE_SECONDS)
        if verdict.expires is not None:
            seconds = min(seconds, verdict.expires - self.clock.seconds())
        return seconds


def _cache_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
