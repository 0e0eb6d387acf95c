"""Configuration: defaults < TOML file < environment < command line.

One frozen ``Settings`` object comes out; nothing else in profiled reads
the environment or the file. Every key of the file is also settable as
``PROFILED_<SECTION>_<KEY>``. Unknown keys, wrong types and out-of-range
values raise ``ConfigError`` whose message starts with the key, so that a
typo is refused at start instead of silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from profiled.errors import ConfigError

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
ROLES = ("web", "worker", "proxy", "all")
VARIANT_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")


def _positive(key: str, value: Any) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")


def _non_negative(key: str, value: Any) -> None:
    if value < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")


def _one_of(*choices: str):  # type: ignore[no-untyped-def]
    def check(key: str, value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")

    return check


def _endpoint(key: str, value: str) -> None:
    if value and ":" not in value:
        raise ConfigError(f"{key}: expected a Twisted endpoint like {DEFAULT_LISTEN!r}")


def _image_url(key: str, value: str) -> None:
    if value and "{id}" not in value:
        raise ConfigError(f"{key}: must contain {{id}}, got {value!r}")


def _variants(key: str, value: Mapping[str, int]) -> None:
    if "default" not in value:
        raise ConfigError(f"{key}: must define the 'default' variant")
    for name, box in value.items():
        if not VARIANT_NAME.fullmatch(name):
            raise ConfigError(f"{key}: variant name {name!r} must match {VARIANT_NAME.pattern}")
        if not isinstance(box, int) or isinstance(box, bool) or not 1 <= box <= 4096:
            raise ConfigError(f"{key}: variant {name!r} box must be 1..4096 px, got {box!r}")


def _http_url(key: str, value: str) -> None:
    if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ConfigError(f"{key}: expected an http:// or https:// URL, got {value!r}")


def _scope_name(key: str, value: str) -> None:
    # RFC 6749 section 3.3: a scope token is printable ASCII without space, " or \\.
    if value and not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", value):
        raise ConfigError(f"{key}: expected one scope name without spaces, got {value!r}")


def _networks(key: str, value: tuple[str, ...]) -> None:
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as e:
            raise ConfigError(f"{key}: {entry!r} is not an address or CIDR network") from e


def _check(validator):  # type: ignore[no-untyped-def]
    return {"check": validator}


@dataclass(frozen=True)
class WebSettings:
    """The upload API."""

    listen: str = field(default=DEFAULT_LISTEN, metadata=_check(_endpoint))
    #: Public URL of the default variant, with {id}; empty: derived from the listener.
    image_url: str = field(default="", metadata=_check(_image_url))
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=_check(_positive))
    #: Seconds a client may take to send a whole body, and its request line and
    #: headers (slow clients are cut off).
    body_timeout: float = field(default=60.0, metadata=_check(_positive))
    #: Serve the try-it page at / (on by default only with the local driver).
    try_page: str = field(default="auto", metadata=_check(_one_of("auto", "on", "off")))


@dataclass(frozen=True)
class ProxySettings:
    """The image server at /a/<id>."""

    listen: str = field(default=DEFAULT_LISTEN, metadata=_check(_endpoint))
    #: Cache lifetime of 404 answers, in seconds.
    not_found_max_age: int = field(default=60, metadata=_check(_non_negative))
    #: One request.summary log line per /a/ request; false: only answers >= 500
    #: get one (the HTTP metrics count every request either way).
    access_log: bool = True


@dataclass(frozen=True)
class WorkerSettings:
    """The crunch worker."""

    listen: str = field(default=DEFAULT_LISTEN, metadata=_check(_endpoint))
    #: Crunch child processes (and images in flight); 0 means one per CPU.
    concurrency: int = field(default=0, metadata=_check(_non_negative))
    #: Deliveries of one image before it is given up on and dead-lettered.
    max_attempts: int = field(default=5, metadata=_check(_positive))
    #: Seconds a received job stays invisible to other workers (extended while it runs).
    visibility_timeout: int = field(default=60, metadata=_check(_positive))
    #: Longest wait of one receive (long poll), seconds.
    poll_wait: float = field(default=20.0, metadata=_check(_non_negative))
    #: First delay before a job that hit a transient error is retried; doubles each time.
    retry_delay: float = field(default=2.0, metadata=_check(_non_negative))
    #: A crunch child is replaced after this many images, to bound memory creep.
    max_jobs_per_child: int = field(default=500, metadata=_check(_positive))


@dataclass(frozen=True)
class DriverSettings:
    """Which implementation of the store and queue to use."""

    name: str = field(default="local", metadata=_check(_one_of("local", "aws")))


@dataclass(frozen=True)
class LocalSettings:
    """The embedded driver: everything under one directory."""

    data_dir: str = "./var"
    #: MiB of small public objects (variants) each process keeps in memory for
    #: the proxy, checked against the disk on every request (0: no cache).
    public_cache_mb: int = field(default=32, metadata=_check(_non_negative))


@dataclass(frozen=True)
class AwsSettings:
    """S3 and SQS, or any compatible service. Credentials never live here."""

    endpoint_url: str = ""
    region: str = "us-east-1"
    private_bucket: str = "profiled-private"
    public_bucket: str = "profiled-public"
    queue_url: str = ""
    #: The dead-letter queue, only read for metrics and the admin command.
    dead_letter_queue_url: str = ""
    #: Attempts of one HTTP call on 5xx, throttling or connection errors.
    max_retries: int = field(default=5, metadata=_check(_positive))
    #: Seconds before a call to S3 or SQS is abandoned.
    timeout: float = field(default=30.0, metadata=_check(_positive))


@dataclass(frozen=True)
class ImageSettings:
    """What is accepted and what is made of it."""

    max_pixels: int = field(default=50_000_000, metadata=_check(_positive))
    max_side: int = field(default=20_000, metadata=_check(_positive))
    max_frames: int = field(default=1000, metadata=_check(_positive))
    crunch_seconds: float = field(default=10.0, metadata=_check(_positive))
    crunch_memory_mb: int = field(default=512, metadata=_check(_positive))
    jpeg_quality: int = field(default=85, metadata=_check(_positive))
    #: fit: inside the box, keeping aspect ratio; cover: centre-crop to the square.
    mode: str = field(default="fit", metadata=_check(_one_of("fit", "cover")))
    variants: Mapping[str, int] = field(
        default_factory=lambda: {"default": 200, "small": 100, "large": 600},
        metadata=_check(_variants),
    )


@dataclass(frozen=True)
class AuthSettings:
    """Who may upload and delete."""

    mode: str = field(default="none", metadata=_check(_one_of("none", "bearer", "oauth")))
    #: bearer: SHA-256 hex digests of accepted tokens, as "principal:sha256hex" entries.
    tokens: tuple[str, ...] = ()
    #: SHA-256 hex digests of admin tokens (may delete any image).
    admin_tokens: tuple[str, ...] = ()
    #: oauth: the RFC 7662 introspection endpoint.
    introspection_url: str = field(default="", metadata=_check(_http_url))
    #: oauth: client credentials sent to it with HTTP Basic (empty: none sent).
    introspection_client_id: str = ""
    introspection_client_secret: str = ""
    #: oauth: seconds before an introspection call is abandoned (answered 503).
    introspection_timeout: float = field(default=5.0, metadata=_check(_positive))
    scope: str = field(default="profile:avatar:write", metadata=_check(_scope_name))
    #: oauth: a token that also carries this scope may delete any image (empty: none may).
    admin_scope: str = field(default="", metadata=_check(_scope_name))
    #: Seconds an introspection verdict is cached (refusals: at most 5 s).
    cache_seconds: float = field(default=60.0, metadata=_check(_non_negative))
    #: Uploads a principal may start per minute (0: no limit).
    uploads_per_minute: int = field(default=0, metadata=_check(_non_negative))
    #: Requests a client address may make per minute to /v1 (0: no limit).
    requests_per_minute_per_ip: int = field(default=0, metadata=_check(_non_negative))
    #: Addresses (CIDR) of proxies whose X-Forwarded-For is believed for the per-IP limit.
    trusted_proxies: tuple[str, ...] = field(default=(), metadata=_check(_networks))


@dataclass(frozen=True)
class LogSettings:
    """Logging on stdout."""

    format: str = field(default="json", metadata=_check(_one_of("json", "text")))
    level: str = field(default="info", metadata=_check(_one_of("debug", "info", "warn", "error")))


@dataclass(frozen=True)
class Settings:
    """Everything profiled is told, after all sources are merged and checked."""

    role: str = "all"
    web: WebSettings = field(default_factory=WebSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    driver: DriverSettings = field(default_factory=DriverSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    aws: AwsSettings = field(default_factory=AwsSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def image_url(self, image_id: str, variant: str = "default") -> str:
        """The public URL of one variant of an image."""
        name = image_id if variant == "default" else f"{image_id}_{variant}"
        template = self.web.image_url or _url_from_endpoint(self.listen_for("proxy"))
        return template.replace("{id}", name)

    def listen_for(self, role: str) -> str:
        """The endpoint the given role listens on (all roles share web's in 'all')."""
        if self.role == "all":
            return self.web.listen
        return getattr(self, role).listen


SECTIONS = {f.name: f for f in fields(Settings) if f.name != "role"}


def _url_from_endpoint(endpoint: str) -> str:
    """Best guess of the URL of a listener, for development set-ups."""
    parts = endpoint.split(":")
    port = parts[1] if len(parts) > 1 and parts[1].isdigit() else "8080"
    host = "127.0.0.1"
    for part in parts[2:]:
        if part.startswith("interface="):
            host = part.split("=", 1)[1] or host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - only used to build a URL
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/a/{{id}}"


def _type_of(section_cls: type, name: str) -> Any:
    return typing.get_type_hints(section_cls)[name]


def _coerce(key: str, kind: Any, value: Any, from_env: bool) -> Any:
    """Turn a TOML value (or an environment string) into the field's type."""
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if from_env and value.lower() in ("1", "true", "yes", "on"):
                return True
            if from_env and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int):
                return value
            if from_env:
                return int(value.replace("_", ""))
            raise ValueError
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, int | float):
                return float(value)
            if from_env:
                return float(value)
            raise ValueError
        if kind is str:
            if isinstance(value, str):
                return value
            raise ValueError
        if origin is tuple:
            if from_env:
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError
        if origin in (Mapping, dict) or kind is Mapping:
            if from_env:
                value = dict(
                    (k.strip(), int(v)) for k, v in (p.split("=", 1) for p in value.split(","))
                )
            if isinstance(value, dict):
                return dict(value)
            raise ValueError
    except (ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"{key}: expected {_describe(kind)}, got {value!r}") from e
    raise ConfigError(f"{key}: unsupported type {kind!r}")


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if typing.get_origin(kind) is tuple:
        return "a list of strings"
    return "a table of name = integer"


def _apply(settings: Settings, section: str, key: str, raw: Any, from_env: bool) -> Settings:
    if section not in SECTIONS:
        raise ConfigError(f"{section}.{key}: unknown section {section!r}")
    current = getattr(settings, section)
    names = {f.name: f for f in fields(current)}
    if key not in names:
        raise ConfigError(f"{section}.{key}: unknown key")
    full = f"{section}.{key}"
    value = _coerce(full, _type_of(type(current), key), raw, from_env)
    check = names[key].metadata.get("check")
    if check is not None:
        check(full, value)
    return replace(settings, **{section: replace(current, **{key: value})})


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    role: str = "all",
) -> Settings:
    """Merge defaults, the TOML file, the environment and the overrides.

    ``overrides`` maps ``section.key`` to values from the command line.
    """
    if role not in ROLES:
        raise ConfigError(f"role: must be one of {', '.join(ROLES)}; got {role!r}")
    settings = Settings(role=role)
    if config_file is not None:
        path = Path(config_file)
        try:
            with path.open("rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config: {path} is not valid TOML: {e}") from e
        for section, table in doc.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: expected a [{section}] table")
            for key, value in table.items():
                settings = _apply(settings, section, key, value, from_env=False)
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if not name.startswith("PROFILED_"):
            continue
        rest = name[len("PROFILED_") :].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS:
            continue  # PROFILED_COMMIT and other non-config variables
        settings = _apply(settings, section, key, value, from_env=True)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        settings = _apply(settings, section, key, value, from_env=isinstance(value, str))
    return settings
