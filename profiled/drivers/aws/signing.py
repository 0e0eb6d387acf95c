"""SigV4 signing of S3 and SQS requests, with botocore doing the cryptography.

Pure functions, no I/O and no clock of their own: the caller passes the time
(from its injected ``IReactorTime``) so that a signature is reproducible in a
test. botocore's ``SigV4Auth`` builds the canonical request and the
signature; what is ours is the URL: S3 object keys are percent-encoded here,
once, and the very same string is both signed and sent, so that spaces, ``+``,
``~``, ``%`` and non-ASCII keys cannot be encoded one way for the signature and
another way on the wire.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import attrs
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
#: The payload hash that tells S3 the body is not hashed: lets a PUT stream
#: from a file without reading it twice (TLS and Content-Length protect it).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_DEFAULT_PORTS = {"http": 80, "https": 443}


def encode_key(key: str) -> str:
    """Percent-encode an object key for an S3 path, keeping ``/`` as it is.

    Every UTF-8 byte except the RFC 3986 unreserved characters (letters,
    digits, ``-._~``) is escaped, as S3's canonical URI wants: S3 does not
    normalise the path, so the escaped string is the canonical URI itself.
    """
    return quote(key, safe="/")


def object_url(endpoint: str, bucket: str, key: str | None = None) -> str:
    """The path-style URL of a bucket, or of one key in it."""
    base = f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}"
    if key is None:
        return base
    return f"{base}/{encode_key(key)}"


def host_header(url: str) -> str:
    """The Host header value for ``url``: what is signed must be what is sent."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{parts.port}"
    return host


@attrs.frozen
class SignedRequest:
    """A request ready to send: the headers include Authorization."""

    method: str
    url: str
    headers: dict[str, str]
    #: Kept for tests and debug logs: what the server must reconstruct.
    canonical_request: str
    string_to_sign: str


def sign(
    credentials: ReadOnlyCredentials,
    service: str,
    region: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    now: float,
    body: bytes = b"",
    payload_hash: str | None = None,
) -> SignedRequest:
    """Sign one request with SigV4 at the time ``now`` (seconds since the epoch).

    For S3 the ``X-Amz-Content-SHA256`` header is always set: to
    ``payload_hash`` when given (``UNSIGNED_PAYLOAD`` for a streamed PUT),
    else to the hash of ``body``. Other services sign the hash of ``body``.
    ``url`` must already be encoded (``object_url``); it is signed verbatim.
    """
    auth: SigV4Auth
    auth = (
        S3SigV4Auth(credentials, service, region)
        if service == "s3"
        else SigV4Auth(credentials, service, region)
    )
    out = dict(headers)
    out["Host"] = host_header(url)
    out["X-Amz-Date"] = time.strftime(SIGV4_TIMESTAMP, time.gmtime(now))
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    if service == "s3" or payload_hash is not None:
        out["X-Amz-Content-SHA256"] = payload_hash or hashlib.sha256(body).hexdigest()
    request = AWSRequest(method=method, url=url, headers=out, data=body)
    request.context["timestamp"] = out["X-Amz-Date"]
    canonical = auth.canonical_request(request)
    to_sign = auth.string_to_sign(request, canonical)
    signature = auth.signature(to_sign, request)
    signed_headers = auth.signed_headers(auth.headers_to_sign(request))
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return SignedRequest(method, url, out, canonical, to_sign)
