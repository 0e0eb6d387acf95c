"""The error answers of the HTTP API, built in one place.

Every error a client sees is JSON of the same shape (API.md):
``{"code": <status>, "errno": <int>, "error": <reason phrase>, "message": <text>}``.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import attrs
from twisted.web.iweb import IRequest

NO_STORE = b"no-store"


@attrs.frozen
class APIError(Exception):
    """An answer other than success, with its status and errno."""

    code: int
    errno: int
    message: str
    #: Seconds for a Retry-After header (429, 503), if any.
    retry_after: int | None = None

    def body(self) -> bytes:
        """The JSON body of this error."""
        return json.dumps(
            {
                "code": self.code,
                "errno": self.errno,
                "error": HTTPStatus(self.code).phrase,
                "message": self.message,
            }
        ).encode()

    def extra_headers(self) -> dict[str, str]:
        """Headers this answer needs besides the JSON ones (Retry-After, ...)."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(self.retry_after)}

    def raw_response(self) -> bytes:
        """A whole HTTP/1.1 response, for answering before twisted.web is ready.

        Used when a body is refused while it is still arriving (too large,
        wrong type, too slow): the connection is closed after it.
        """
        body = self.body()
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            **self.extra_headers(),
        }
        head = f"HTTP/1.1 {self.code} {HTTPStatus(self.code).phrase}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        return head.encode("latin-1") + b"\r\n" + body


def render_json(request: IRequest, code: int, body: Any, cache_control: bytes = NO_STORE) -> bytes:
    """Set the status and headers of a JSON answer; return its body.

    The one place JSON answers get their headers, errors included.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", cache_control)
    request.setHeader(b"x-content-type-options", b"nosniff")
    return json.dumps(body).encode()


def render_error(request: IRequest, error: APIError, cache_control: bytes = NO_STORE) -> bytes:
    """Write ``error`` as the answer to ``request``: status, headers, JSON body."""
    request.setResponseCode(error.code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", cache_control)
    request.setHeader(b"x-content-type-options", b"nosniff")
    for name, value in error.extra_headers().items():
        request.setHeader(name.lower().encode("latin-1"), value.encode("latin-1"))
    return error.body()


def malformed(message: str) -> APIError:
    return APIError(400, 112, message)


def unauthorized(message: str = "missing or invalid credentials") -> APIError:
    return APIError(401, 100, message)


def forbidden(message: str) -> APIError:
    return APIError(403, 102, message)


def not_found(message: str = "no such image") -> APIError:
    return APIError(404, 120, message)


def method_not_allowed(message: str = "method not allowed on this path") -> APIError:
    return APIError(405, 121, message)


def timed_out(message: str = "the request body did not arrive in time") -> APIError:
    return APIError(408, 113, message)


def length_required(message: str = "Content-Length or a chunked body is required") -> APIError:
    return APIError(411, 101, message)


def too_large(limit: int) -> APIError:
    return APIError(413, 110, f"the body is over the limit of {limit} bytes")


def unsupported(message: str) -> APIError:
    return APIError(415, 111, message)


def over_limit(message: str) -> APIError:
    return APIError(422, 130, message)


def rate_limited(retry_after: int) -> APIError:
    return APIError(429, 114, "too many requests; try again later", retry_after)


def unavailable(message: str = "storage is unavailable; nothing was stored") -> APIError:
    return APIError(503, 201, message, retry_after=5)


def internal() -> APIError:
    return APIError(500, 999, "unexpected error; it has been logged")
