"""Pick the authenticator that ``auth.mode`` names, and build the Gate."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.web import client as web_client

from profiled.config import Settings
from profiled.errors import ConfigError
from profiled.web.auth import Authenticator, Gate, NoAuth, StaticTokens


def make_introspection_client(reactor: Any) -> HTTPClient:
    """A treq client on a small persistent pool, for the introspection endpoint."""
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    pool.cachedConnectionTimeout = 30
    return HTTPClient(web_client.Agent(reactor, pool=pool))


def build_authenticator(
    settings: Settings, reactor: IReactorTime, http: HTTPClient | None = None
) -> Authenticator:
    """The authenticator of ``auth.mode``; ``http`` replaces the introspection client."""
    mode = settings.auth.mode
    if mode == "none":
        return NoAuth()
    if mode == "bearer":
        return StaticTokens.from_settings(settings.auth)
    if mode == "oauth":
        from profiled.web.introspection import OAuthIntrospection

        return OAuthIntrospection.from_settings(
            settings.auth, http or make_introspection_client(reactor), reactor
        )
    raise ConfigError(f"auth.mode: {mode!r} is not built")


def build_gate(settings: Settings, reactor: IReactorTime, http: HTTPClient | None = None) -> Gate:
    """The authenticator with the configured rate limits around it."""
    return Gate.from_settings(settings.auth, build_authenticator(settings, reactor, http), reactor)
