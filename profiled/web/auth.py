"""Who is calling: the auth modes of the upload API.

- ``none``: everyone is the principal ``anonymous`` (development).
- ``bearer``: static tokens; the config holds only their SHA-256 digests,
  as ``principal:hexdigest`` (admin tokens: ``admin_tokens``).
- ``oauth``: RFC 7662 token introspection (see profiled.web.introspection),
  requiring the configured scope.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

import attrs
from twisted.web.iweb import IRequest

from profiled.config import AuthSettings
from profiled.errors import ConfigError
from profiled.web import errors


@attrs.frozen
class Principal:
    """The caller, as recorded with its uploads."""

    name: str
    admin: bool = False


ANONYMOUS = Principal("anonymous")


class Authenticator(Protocol):
    """Turns a request into a Principal, or raises an APIError (401/403)."""

    #: False when everyone is let in (and so anyone may delete).
    enforced: bool

    async def authenticate(self, request: IRequest) -> Principal: ...


def bearer_token(request: IRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = request.getHeader(b"authorization")
    if not header:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_digest(token: str) -> str:
    """The digest under which a static token is configured."""
    return hashlib.sha256(token.encode()).hexdigest()


@attrs.define
class NoAuth:
    """Everyone is ``anonymous``."""

    enforced: bool = False

    async def authenticate(self, request: IRequest) -> Principal:
        return ANONYMOUS


@attrs.define
class StaticTokens:
    """Bearer tokens compared, by digest, with the configured ones."""

    #: digest -> principal
    tokens: dict[str, Principal]
    enforced: bool = True

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> StaticTokens:
        tokens: dict[str, Principal] = {}
        for entry in settings.tokens:
            name, _, digest = entry.rpartition(":")
            if not name or len(digest) != 64:
                raise ConfigError("auth.tokens: entries must be 'principal:<sha256 hex>'")
            tokens[digest.lower()] = Principal(name)
        for entry in settings.admin_tokens:
            name, _, digest = entry.rpartition(":")
            if len(digest) != 64:
                raise ConfigError("auth.admin_tokens: entries must be 'name:<sha256 hex>'")
            tokens[digest.lower()] = Principal(name or "admin", admin=True)
        if not tokens:
            raise ConfigError("auth.tokens: bearer mode needs at least one token")
        return cls(tokens)

    async def authenticate(self, request: IRequest) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise errors.unauthorized()
        digest = token_digest(token)
        for known, principal in self.tokens.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise errors.unauthorized()
