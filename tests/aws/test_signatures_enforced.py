"""The test servers really check signatures, so the contract runs prove ours right."""

from __future__ import annotations

import io
import urllib.request
from urllib.error import HTTPError

import pytest
import pytest_twisted

from profiled.drivers.aws.client import AccessDenied
from profiled.drivers.aws.s3 import S3Store
from profiled.drivers.aws.sqs import SQSQueue, create_queue
from profiled.drivers.consumers import read_bytes

pytestmark = pytest.mark.aws

WRONG_SECRET = "this-is-not-the-secret-key-at-all"


@pytest.fixture(params=["moto_server", "seaweedfs_server"])
def s3_server(request):
    """Each S3 server of the session in turn."""
    return request.getfixturevalue(request.param)


@pytest_twisted.ensureDeferred
async def test_s3_refuses_a_wrong_secret(s3_server):
    """A request signed with the right key id but a wrong secret is refused with 403."""
    good = S3Store(s3_server.client(), s3_server.endpoint, "signature-check")
    await good.create_bucket()
    await good.put("k", io.BytesIO(b"ok"), 2, "text/plain")
    bad = S3Store(s3_server.client(WRONG_SECRET), s3_server.endpoint, "signature-check")
    with pytest.raises(AccessDenied) as caught:
        await bad.head("k")
    assert caught.value.status == 403
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        await bad.get("k")
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        await bad.put("k", io.BytesIO(b"no"), 2, "text/plain")
    assert await read_bytes(good, "k") == b"ok"


def test_s3_refuses_an_unsigned_request(s3_server):
    """An anonymous request is refused: the servers do not run open."""
    with pytest.raises(HTTPError) as caught:
        urllib.request.urlopen(f"{s3_server.endpoint}/signature-check/k", timeout=10)
    assert caught.value.code == 403


@pytest_twisted.ensureDeferred
async def test_sqs_refuses_a_wrong_secret(moto_server):
    """moto's SQS checks the signature of JSON-protocol calls too."""
    url, _ = await create_queue(moto_server.client(), moto_server.endpoint, "signature-check")
    good = SQSQueue(moto_server.client(), moto_server.endpoint, url, 30, moto_server.client().clock)
    await good.ping()
    bad = SQSQueue(moto_server.client(WRONG_SECRET), moto_server.endpoint, url, 30, good.clock)
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        await bad.send("forged")
    assert await good.receive(max_messages=10, wait=0) == []
