"""Pick the authenticator that ``auth.mode`` names."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from profiled.config import Settings
from profiled.errors import ConfigError
from profiled.web.auth import Authenticator, NoAuth, StaticTokens


def build_authenticator(settings: Settings, reactor: IReactorTime) -> Authenticator:
    mode = settings.auth.mode
    if mode == "none":
        return NoAuth()
    if mode == "bearer":
        return StaticTokens.from_settings(settings.auth)
    raise ConfigError(f"auth.mode: {mode!r} is not built yet")
