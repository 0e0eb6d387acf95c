"""The root resource of a listener: which paths go to which role."""

from __future__ import annotations

from typing import Any

from twisted.web.error import UnsupportedMethod
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request as WebRequest

from profiled.web import errors


class NotFoundPage(Resource):
    """The JSON 404 of anything no role claims."""

    isLeaf = True

    def render(self, request: WebRequest) -> bytes:
        return errors.render_error(
            request, errors.not_found("no such resource"), cache_control=b"public, max-age=60"
        )


class JSONMethodErrors(Resource):
    """A leaf whose wrong methods get the API's JSON 405, not twisted.web's page.

    twisted.web answers a method a resource lacks with an HTML 405, or,
    for methods other than GET, HEAD and POST (PUT, TRACE, ...), with a
    "501 Huh?": a 5xx for a client's mistake. HEAD on a GET-only resource
    is left to twisted.web, which fakes it from GET.
    """

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self.inner = inner

    def render(self, request: WebRequest) -> Any:
        try:
            return self.inner.render(request)
        except UnsupportedMethod as e:
            if request.method == b"HEAD" and b"GET" in e.allowedMethods:
                raise
            request.setHeader(b"allow", b", ".join(e.allowedMethods))
            return errors.render_error(request, errors.method_not_allowed())


class Root(Resource):
    """Dispatches on the first path segment.

    ``/v1/...`` goes to the upload API (a Klein resource that routes on the
    whole path, so the segment is put back), ``/a/...`` to the image proxy,
    the operations endpoints to theirs, ``/`` to the try-it page if served.
    """

    def __init__(
        self,
        children: dict[bytes, IResource],
        api: IResource | None = None,
        index: IResource | None = None,
    ) -> None:
        super().__init__()
        self.named = children
        self.api = api
        self.index = index
        self.missing = NotFoundPage()

    def getChild(self, path: bytes, request: WebRequest) -> Any:
        if path in self.named:
            return JSONMethodErrors(self.named[path])
        if path == b"v1" and self.api is not None:
            assert request.postpath is not None and request.prepath is not None
            request.postpath.insert(0, request.prepath.pop())
            return self.api
        if path == b"" and not request.postpath and self.index is not None:
            return JSONMethodErrors(self.index)
        return self.missing

    def render(self, request: WebRequest) -> bytes:
        return self.missing.render(request)
