"""The proxy and ops resources driven through treq's StubTreq (in memory).

The upload API is tested through tests/unit/wire.py instead, because its
body handling lives in ProfiledRequest, which StubTreq's own Site does not
use; the proxy and the ops pages need nothing but a plain Request.
"""

from __future__ import annotations

import io

from treq.testing import StubTreq
from twisted.python.failure import Failure

from profiled.drivers.memory import MemoryStore
from profiled.images import Layout
from profiled.ops.dockerflow import ops_children
from profiled.ops.metrics import Metrics
from profiled.proxy.resource import ImageProxy
from profiled.root import Root

ID = "fedcba9876543210fedcba9876543210"


def resolved(client: StubTreq, d):  # type: ignore[no-untyped-def]
    """The result of a Deferred once the stub has delivered everything."""
    out: list = []
    d.addBoth(out.append)
    client.flush()
    assert out, "the request did not complete"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def make_client(store: MemoryStore) -> StubTreq:
    metrics = Metrics()
    layout = Layout({"default": 200, "small": 100, "large": 600})
    children = dict(ops_children(metrics, {"public_store": store.ping}))
    children[b"a"] = ImageProxy(store, layout, metrics, 60)
    return StubTreq(Root(children))


def test_variant_served_through_stubtreq():
    """GET /a/<id>_large returns the stored bytes with the immutable headers."""
    store = MemoryStore()
    store.put(ID + "_large", io.BytesIO(b"PNGDATA"), 7, "image/png")
    client = make_client(store)
    response = resolved(client, client.get(f"http://x/a/{ID}_large"))
    assert response.code == 200
    assert resolved(client, response.content()) == b"PNGDATA"
    headers = response.headers
    assert headers.getRawHeaders("content-type") == ["image/png"]
    assert headers.getRawHeaders("cache-control") == ["public, max-age=31536000, immutable"]
    assert headers.getRawHeaders("x-content-type-options") == ["nosniff"]


def test_heartbeat_through_stubtreq():
    """/__heartbeat__ turns 503 when the store it checks is down."""
    store = MemoryStore()
    client = make_client(store)
    assert resolved(client, client.get("http://x/__heartbeat__")).code == 200
    store.down = True
    response = resolved(client, client.get("http://x/__heartbeat__"))
    assert response.code == 503
    body = resolved(client, response.json())
    assert body["checks"]["public_store"].startswith("error")
