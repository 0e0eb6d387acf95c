"""Who is calling, and whether they may: the auth modes and the limits.

- ``none``: everyone is the principal ``anonymous`` (development).
- ``bearer``: static tokens; the config holds only their SHA-256 digests,
  as ``principal:hexdigest`` (admin tokens: ``admin_tokens``).
- ``oauth``: RFC 7662 token introspection (see profiled.web.introspection),
  requiring the configured scope.

When auth is on, ``POST /v1/images`` and ``DELETE /v1/images/<id>`` need a
token (``Authorization: Bearer <token>``); ``GET /v1/images/<id>`` stays
public: it tells only the state of an image whose 128-bit id one must
already know. The ``Gate`` adds the rate limits (profiled.web.ratelimit)
and the checks that can be made from the headers alone, before the body
is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from profiled.config import AuthSettings
from profiled.errors import ConfigError
from profiled.web import errors
from profiled.web.errors import APIError
from profiled.web.ratelimit import IPNetwork, TokenBuckets, client_key, parse_networks

REALM = "profiled"
#: RFC 6750 section 2.1: the characters of a bearer token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: Longest token looked at; longer ones are refused without further work.
MAX_TOKEN_LENGTH = 4096
#: A usable principal: 1 to 256 characters, no control characters.
_PRINCIPAL = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")

UPLOAD_PATH = b"/v1/images"
IMAGE_PREFIX = b"/v1/images/"


@attrs.frozen
class Principal:
    """The caller, as recorded with its uploads."""

    name: str
    admin: bool = False


ANONYMOUS = Principal("anonymous")


@attrs.frozen
class AuthError(APIError):
    """A 401 or 403 answer, with its ``WWW-Authenticate`` challenge (RFC 6750)."""

    challenge: str = f'Bearer realm="{REALM}"'

    def extra_headers(self) -> dict[str, str]:
        return {**super().extra_headers(), "WWW-Authenticate": self.challenge}


def unauthorized(message: str = "missing or invalid credentials") -> AuthError:
    """401: no token, or one that is unknown, expired or malformed."""
    challenge = f'Bearer realm="{REALM}"'
    if message != "missing or invalid credentials":
        challenge += ', error="invalid_token"'
    return AuthError(401, 100, message, challenge=challenge)


def insufficient_scope(scope: str) -> AuthError:
    """403: a valid token without the scope this API needs."""
    return AuthError(
        403,
        102,
        f"the token lacks the scope {scope}",
        challenge=f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"',
    )


def usable_principal(name: object) -> bool:
    """True for a string fit to be recorded as a principal."""
    return isinstance(name, str) and _PRINCIPAL.fullmatch(name) is not None


class Authenticator(Protocol):
    """Turns a request into a Principal, or raises an APIError (401/403/503)."""

    #: False when everyone is let in (and so anyone may delete).
    enforced: bool

    async def authenticate(self, request: IRequest) -> Principal: ...

    def early(self, token: str | None) -> APIError | None:
        """A refusal known from the token alone, without I/O (None: not known yet)."""


def bearer_token(request: IRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if well formed."""
    header = request.getHeader(b"authorization")
    if not header:
        return None
    return parse_bearer(header)


def parse_bearer(header: bytes) -> str | None:
    """The token of an Authorization header value, or None."""
    scheme, _, token = header.decode("latin-1").partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or len(token) > MAX_TOKEN_LENGTH:
        return None
    if not _B64TOKEN.fullmatch(token):
        return None
    return token


def token_digest(token: str) -> str:
    """The digest under which a static token is configured."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token_entries(key: str, entries: Sequence[str], admin: bool) -> dict[str, Principal]:
    """``principal:<sha256 hex>`` entries as digest -> Principal."""
    tokens: dict[str, Principal] = {}
    for entry in entries:
        name, _, digest = entry.rpartition(":")
        if admin and not name:
            name = "admin"
        if not usable_principal(name) or not _HEX_DIGEST.fullmatch(digest):
            raise ConfigError(f"{key}: entries must be 'principal:<sha256 hex>'")
        digest = digest.lower()
        if digest in tokens:
            raise ConfigError(f"{key}: the same token digest is listed twice")
        tokens[digest] = Principal(name, admin=admin)
    return tokens


def lookup_digest(tokens: dict[str, Principal], token: str) -> Principal | None:
    """The principal of a static token, in time independent of how many there are.

    The token is hashed and the digest found by a dict lookup: the work
    does not grow with the number of tokens (a loop of comparisons would
    tell how many there are), and what a lookup's timing could leak is
    about SHA-256 digests, from which no token can be worked out, so a
    byte-by-byte constant-time comparison would add nothing here.
    """
    return tokens.get(token_digest(token))


@attrs.define
class NoAuth:
    """Everyone is ``anonymous``."""

    enforced: bool = False

    async def authenticate(self, request: IRequest) -> Principal:
        return ANONYMOUS

    def early(self, token: str | None) -> APIError | None:
        return None


@attrs.define
class StaticTokens:
    """Bearer tokens compared, by digest, with the configured ones."""

    #: digest -> principal
    tokens: dict[str, Principal]
    enforced: bool = True

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> StaticTokens:
        tokens = parse_token_entries("auth.tokens", settings.tokens, admin=False)
        admins = parse_token_entries("auth.admin_tokens", settings.admin_tokens, admin=True)
        if tokens.keys() & admins.keys():
            raise ConfigError("auth.admin_tokens: a token is listed as both user and admin")
        tokens.update(admins)
        if not tokens:
            raise ConfigError("auth.tokens: bearer mode needs at least one token")
        return cls(tokens)

    def early(self, token: str | None) -> APIError | None:
        if token is None or lookup_digest(self.tokens, token) is None:
            return unauthorized()
        return None

    async def authenticate(self, request: IRequest) -> Principal:
        token = bearer_token(request)
        principal = None if token is None else lookup_digest(self.tokens, token)
        if principal is None:
            raise unauthorized()
        return principal


def _peer_host(request: IRequest) -> str | None:
    client = getattr(request, "client", None)
    if isinstance(client, IPv4Address | IPv6Address):
        return client.host
    return None


@attrs.define
class Gate:
    """The authenticator plus the rate limits, as the upload API uses them.

    ``admit`` runs when a request's headers are in, before its body is read
    (profiled.web.request): the per-address limit on every ``/v1`` request,
    then, for the routes that need auth, the refusals the token alone
    decides (none, malformed, a known-bad static token, a cached verdict).
    ``check_upload`` is the per-principal upload limit, run by the route
    once the principal is known.
    """

    authenticator: Authenticator
    per_address: TokenBuckets | None = None
    per_principal: TokenBuckets | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(
        cls, settings: AuthSettings, authenticator: Authenticator, clock: IReactorTime
    ) -> Gate:
        return cls(
            authenticator,
            TokenBuckets(settings.requests_per_minute_per_ip, clock)
            if settings.requests_per_minute_per_ip
            else None,
            TokenBuckets(settings.uploads_per_minute, clock)
            if settings.uploads_per_minute
            else None,
            parse_networks(settings.trusted_proxies),
        )

    @property
    def enforced(self) -> bool:
        return self.authenticator.enforced

    async def authenticate(self, request: IRequest) -> Principal:
        return await self.authenticator.authenticate(request)

    def admit(self, request: IRequest, method: bytes, path: bytes) -> APIError | None:
        """The early verdict on a request from its headers (None: go on)."""
        if not (path == b"/v1" or path.startswith(b"/v1/")):
            return None
        if self.per_address is not None:
            host = _peer_host(request)
            if host is not None:
                forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
                key = client_key(
                    host, [f.decode("latin-1") for f in forwarded], self.trusted_proxies
                )
                wait = self.per_address.take(key)
                if wait is not None:
                    return errors.rate_limited(wait)
        if self.enforced and needs_auth(method, path):
            return self.authenticator.early(bearer_token(request))
        return None

    def check_upload(self, principal: Principal) -> None:
        """Raise 429 when ``principal`` has used up its uploads for now."""
        if self.per_principal is None:
            return
        wait = self.per_principal.take(principal.name)
        if wait is not None:
            raise errors.rate_limited(wait)


def needs_auth(method: bytes, path: bytes) -> bool:
    """True for the routes that need a token when auth is on: upload and delete."""
    if method == b"POST":
        return path == UPLOAD_PATH
    if method == b"DELETE":
        return path.startswith(IMAGE_PREFIX)
    return False
