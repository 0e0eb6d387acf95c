"""The upload API: ``/v1/images`` (API.md "Upload API").

The request body has already been received, checked and spooled to disk
by ProfiledRequest by the time a route runs; the routes store it, queue
it, and report on images.
"""

from __future__ import annotations

from typing import Any, BinaryIO, cast

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from profiled.config import Settings
from profiled.drivers import Drivers
from profiled.errors import Unavailable
from profiled.ids import is_valid_id, new_id
from profiled.images import Layout, delete_image, image_state
from profiled.ops.metrics import Metrics
from profiled.web import errors
from profiled.web.auth import Gate
from profiled.web.errors import APIError, render_error, render_json
from profiled.web.spool import UploadSpool

#: Attempts at enqueueing before an upload is undone and answered 503.
ENQUEUE_ATTEMPTS = 3


class UploadAPI:
    """Routes of /v1; state injected, nothing global."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        settings: Settings,
        drivers: Drivers,
        auth: Gate,
        metrics: Metrics,
        clock: IReactorTime,
    ) -> None:
        self.settings = settings
        self.drivers = drivers
        self.auth = auth
        self.metrics = metrics
        self.clock = clock
        self.layout = Layout(settings.images.variants)

    def resource(self):  # type: ignore[no-untyped-def]
        return self.app.resource()

    # -- routes ----------------------------------------------------------------

    @app.route("/v1/images", methods=["POST"])
    async def upload(self, request: IRequest) -> bytes:
        spool: UploadSpool = request.content  # type: ignore[attr-defined]
        try:
            # Closed whatever the answer: a body spooled into the store's
            # space is a named file, not one that vanishes with its last reference.
            principal = await self.auth.authenticate(request)
            self.auth.check_upload(principal)
            headers = request.requestHeaders
            if not headers.hasHeader(b"content-length") and not headers.hasHeader(
                b"transfer-encoding"
            ):
                raise errors.length_required()
            if request.body_error is not None:  # type: ignore[attr-defined]
                raise request.body_error  # type: ignore[attr-defined]
            image_id = await self._store_and_enqueue(spool, principal.name)
        finally:
            spool.close()
        self.metrics.uploads.labels("accepted", "202").inc()
        self.metrics.upload_bytes.inc(spool.size)
        self.log.info(
            "accepted {id}: {size} bytes of {type} from {principal}",
            id=image_id,
            size=spool.size,
            type=spool.content_type,
            principal=principal.name,
        )
        request.setHeader(b"location", f"/v1/images/{image_id}".encode())
        return render_json(
            request,
            202,
            {"id": image_id, "status": "pending", "url": self.settings.image_url(image_id)},
        )

    @app.route("/v1/images/<string:image_id>", methods=["GET", "HEAD"])
    async def status(self, request: IRequest, image_id: str) -> bytes:
        state = await image_state(self.drivers, self.layout, image_id)
        if state is None:
            raise errors.not_found()
        body: dict[str, Any] = {
            "id": image_id,
            "status": state.status,
            "url": self.settings.image_url(image_id),
            "variants": {},
        }
        if state.status == "ready":
            body["variants"] = {
                name: self.settings.image_url(image_id, name) for name in self.layout.variants
            }
        if state.status == "failed":
            body["error"] = state.error
        return render_json(request, 200, body)

    @app.route("/v1/images/<string:image_id>", methods=["DELETE"])
    async def delete(self, request: IRequest, image_id: str) -> bytes:
        principal = await self.auth.authenticate(request)
        if not is_valid_id(image_id):
            raise errors.not_found()
        # The original is what makes an image exist, and it names the uploader.
        original = await self.drivers.private.head(self.layout.original(image_id))
        if original is None:
            raise errors.not_found()
        if self.auth.enforced and not principal.admin:
            if original.metadata.get("principal") != principal.name:
                raise errors.forbidden("only the uploader or an admin may delete this image")
        await delete_image(self.drivers, self.layout, image_id)
        self.log.info("deleted {id} for {principal}", id=image_id, principal=principal.name)
        request.setResponseCode(204)
        return b""

    # -- errors, in one place ------------------------------------------------

    @app.handle_errors(APIError)
    def api_error(self, request: IRequest, failure: Any) -> bytes:
        return self._answer(request, failure.value)

    @app.handle_errors(Unavailable)
    def backend_down(self, request: IRequest, failure: Any) -> bytes:
        self.log.warn("backend unavailable: {error}", error=str(failure.value))
        return self._answer(request, errors.unavailable())

    @app.handle_errors(NotFound)
    def no_route(self, request: IRequest, failure: Any) -> bytes:
        return render_error(request, errors.not_found("no such resource"))

    @app.handle_errors(MethodNotAllowed)
    def wrong_method(self, request: IRequest, failure: Any) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode())
        return render_error(request, errors.method_not_allowed())

    @app.handle_errors(Exception)
    def unexpected(self, request: IRequest, failure: Any) -> bytes:
        self.log.failure(
            "unexpected error in {method} {path}", failure, method=request.method, path=request.path
        )
        return self._answer(request, errors.internal())

    def _answer(self, request: IRequest, error: APIError) -> bytes:
        if request.path == b"/v1/images" and request.method == b"POST":
            outcome = "failed" if error.code >= 500 else "refused"
            self.metrics.uploads.labels(outcome, str(error.code)).inc()
        return render_error(request, error)

    # -- inside ----------------------------------------------------------------

    async def _store_and_enqueue(self, spool: UploadSpool, principal: str) -> str:
        """Store the original, then queue its id; leave nothing behind on failure."""
        image_id = new_id()
        key = self.layout.original(image_id)
        try:
            await self._store(key, spool, {"principal": principal})
        except Unavailable:
            # The store may have half-written nothing (puts are atomic), but a
            # put that timed out may still land: remove it to be sure.
            await self._forget(key)
            raise
        last: Exception | None = None
        for attempt in range(ENQUEUE_ATTEMPTS):
            try:
                await self.drivers.queue.send(image_id)
                return image_id
            except Unavailable as e:
                last = e
                await deferLater(self.clock, 0.2 * 2**attempt, lambda: None)
        await self._forget(key)
        raise Unavailable(f"queue unavailable after {ENQUEUE_ATTEMPTS} attempts: {last}")

    async def _store(self, key: str, spool: UploadSpool, metadata: dict[str, str]) -> None:
        """Put the body, or have the store adopt it when it was spooled into its space."""
        if spool.spooled is not None and spool.store is not None:
            await spool.store.adopt(key, spool.spooled, spool.content_type, metadata)
        else:
            await self.drivers.private.put(
                key, cast(BinaryIO, spool), spool.size, spool.content_type, metadata
            )

    async def _forget(self, key: str) -> None:
        try:
            await self.drivers.private.delete(key)
        except Exception:
            self.log.failure("could not remove {key} after a failed upload", key=key)
