"""Where an image lives, and what state it is in.

There is no database: an image's state is read off the stores.

- private store: ``originals/<id>`` (the upload as received; metadata
  ``principal``) and ``failures/<id>`` (a small JSON record: reason, detail).
- public store: one object per variant, named as in its URL: ``<id>`` for
  the default variant, ``<id>_<name>`` for the others.

An image exists while its original does (DELETE removes the original
last). The worker writes the default variant last, so its presence means
every variant is there: ``ready``. Else a failure record means ``failed``;
else ``pending``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import attrs

from profiled.drivers import Drivers
from profiled.drivers.consumers import read_bytes
from profiled.ids import is_valid_id

ORIGINALS = "originals/"
FAILURES = "failures/"
_PUBLIC_NAME = re.compile(r"([0-9a-f]{32})(?:_([a-z][a-z0-9]{0,15}))?")


@attrs.frozen
class Layout:
    """Key names for one configured set of variants."""

    #: Variant name -> box side, the default variant included.
    variants: Mapping[str, int]

    def original(self, image_id: str) -> str:
        return ORIGINALS + image_id

    def failure(self, image_id: str) -> str:
        return FAILURES + image_id

    def variant(self, image_id: str, name: str = "default") -> str:
        return image_id if name == "default" else f"{image_id}_{name}"

    def variant_names(self) -> list[str]:
        """Variant names in write order: the default one last."""
        return [n for n in self.variants if n != "default"] + ["default"]

    def parse_public_name(self, name: str) -> tuple[str, str] | None:
        """``<id>`` or ``<id>_<variant>`` -> (id, variant); None when not one."""
        m = _PUBLIC_NAME.fullmatch(name)
        if m is None:
            return None
        variant = m.group(2) or "default"
        if variant == "default" and m.group(2) is not None:
            return None  # "<id>_default" is not a URL we hand out
        if variant not in self.variants:
            return None
        return m.group(1), variant


@attrs.frozen
class ImageState:
    """The state of an image as a client sees it."""

    id: str
    status: str  # pending | ready | failed
    error: str | None = None
    principal: str | None = None


async def image_state(drivers: Drivers, layout: Layout, image_id: str) -> ImageState | None:
    """Read the state of ``image_id`` off the stores; None when it does not exist."""
    if not is_valid_id(image_id):
        return None
    # The original is what makes an image exist: DELETE removes it last, and a
    # worker that raced a DELETE may have put variants back for a moment.
    original = await drivers.private.head(layout.original(image_id))
    if original is None:
        return None
    principal = original.metadata.get("principal")
    if await drivers.public.head(layout.variant(image_id)) is not None:
        return ImageState(image_id, "ready", principal=principal)
    if await drivers.private.head(layout.failure(image_id)) is not None:
        record = await read_failure(drivers, layout, image_id)
        return ImageState(
            image_id, "failed", error=record.get("reason", "failed"), principal=principal
        )
    return ImageState(image_id, "pending", principal=principal)


async def read_failure(drivers: Drivers, layout: Layout, image_id: str) -> dict[str, str]:
    """The failure record of an image ({} when unreadable)."""
    try:
        raw = await read_bytes(drivers.private, layout.failure(image_id), limit=64 * 1024)
        record = json.loads(raw)
    except Exception:
        return {}
    return record if isinstance(record, dict) else {}


def failure_record(reason: str, detail: str, attempts: int) -> bytes:
    """The JSON written to ``failures/<id>``."""
    return json.dumps({"reason": reason, "detail": detail, "attempts": attempts}).encode()


async def unpublish(drivers: Drivers, layout: Layout, image_id: str) -> None:
    """Remove every variant of an image, the default one (the ready mark) first."""
    for name in layout.variant_names()[::-1]:
        await drivers.public.delete(layout.variant(image_id, name))


async def delete_image(drivers: Drivers, layout: Layout, image_id: str) -> None:
    """Remove every variant, the failure record and the original.

    Variants go first so that the image stops being served at once; the
    original goes last, so a worker racing with the delete notices it is
    gone (see worker) and removes what it wrote.
    """
    await unpublish(drivers, layout, image_id)
    await drivers.private.delete(layout.failure(image_id))
    await drivers.private.delete(layout.original(image_id))
