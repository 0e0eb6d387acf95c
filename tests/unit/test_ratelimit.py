"""Token buckets and client keys (profiled.web.ratelimit), and the limits over the wire."""

from __future__ import annotations

import ipaddress

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from profiled.config import load_settings
from profiled.errors import ConfigError
from profiled.web.ratelimit import TokenBuckets, client_key, parse_networks
from tests.unit.test_web_api import jpeg
from tests.unit.wire import make_harness, parse_responses, stored_original_count


def test_bucket_allows_a_minutes_worth_then_refuses_with_wait():
    """A fresh key gets per_minute events at once, then a refusal saying how long to wait."""
    clock = Clock()
    buckets = TokenBuckets(6, clock)
    assert [buckets.take("a") for _ in range(6)] == [None] * 6
    assert buckets.take("a") == 10  # one token every 10 s
    clock.advance(9.5)
    assert buckets.take("a") == 1
    clock.advance(0.5)
    assert buckets.take("a") is None
    assert buckets.take("a") == 10


def test_buckets_are_per_key():
    """Using up one key's bucket leaves another key's alone."""
    buckets = TokenBuckets(1, Clock())
    assert buckets.take("a") is None
    assert buckets.take("a") == 60
    assert buckets.take("b") is None


def test_refill_is_capped_at_capacity():
    """A long idle spell refills a bucket to per_minute, not beyond."""
    clock = Clock()
    buckets = TokenBuckets(3, clock, max_keys=10)
    buckets.take("a")
    buckets.take("b")
    clock.advance(10)
    buckets.take("b")  # keeps "b" recent
    clock.advance(3600)
    assert [buckets.take("b") for _ in range(4)] == [None, None, None, 20]


def test_idle_buckets_are_forgotten():
    """A bucket idle long enough to be full again is dropped from memory."""
    clock = Clock()
    buckets = TokenBuckets(60, clock)
    for i in range(100):
        buckets.take(f"k{i}")
    assert len(buckets) == 100
    clock.advance(59)
    buckets.take("fresh")
    assert len(buckets) == 101
    clock.advance(2)
    buckets.take("fresh")
    assert len(buckets) == 1


def test_memory_is_bounded_by_max_keys():
    """Past max_keys the least recently used bucket goes, whatever its state."""
    buckets = TokenBuckets(1, Clock(), max_keys=3)
    for key in ("a", "b", "c", "d"):
        assert buckets.take(key) is None
    assert len(buckets) == 3
    assert buckets.take("a") is None  # "a" was evicted: forgiven
    assert buckets.take("d") == 60


def test_client_key_is_the_peer_without_trusted_proxies():
    """With no trusted proxies, X-Forwarded-For is ignored: the peer is the client."""
    assert client_key("203.0.113.7", ["198.51.100.1"]) == "203.0.113.7"


def test_client_key_reads_forwarded_for_from_trusted_proxies_only():
    """A trusted peer's X-Forwarded-For is read right to left, stopping at the first stranger."""
    trusted = parse_networks(["10.0.0.0/8"])
    # The client forged "1.2.3.4"; the LB appended the real address.
    assert client_key("10.0.0.5", ["1.2.3.4, 198.51.100.9"], trusted) == "198.51.100.9"
    # Two proxies in a row, on two header lines.
    assert client_key("10.0.0.5", ["1.2.3.4, 198.51.100.9", "10.1.1.1"], trusted) == (
        "198.51.100.9"
    )
    # An untrusted peer's header is not believed.
    assert client_key("198.51.100.2", ["1.2.3.4"], trusted) == "198.51.100.2"
    # A trusted proxy that wrote nonsense: the last address known is used.
    assert client_key("10.0.0.5", ["garbage"], trusted) == "10.0.0.5"
    # No header at all: the proxy itself.
    assert client_key("10.0.0.5", [], trusted) == "10.0.0.5"
    # Ports and brackets are tolerated.
    assert client_key("10.0.0.5", ["198.51.100.9:5555"], trusted) == "198.51.100.9"
    assert client_key("10.0.0.5", ["[2001:db8::1]:443"], trusted) == "2001:db8::/64"


def test_ipv6_clients_are_keyed_by_their_64():
    """Addresses of one IPv6 /64 share a bucket; a v4-mapped address is its IPv4 one."""
    assert client_key("2001:db8:1:2::1", []) == client_key("2001:db8:1:2:ffff::9", [])
    assert client_key("2001:db8:1:2::1", []) != client_key("2001:db8:1:3::1", [])
    assert client_key("::ffff:192.0.2.1", []) == "192.0.2.1"


def test_trusted_proxies_are_checked_at_load():
    """A malformed trusted_proxies entry is refused naming the key."""
    with pytest.raises(ConfigError, match=r"auth\.trusted_proxies"):
        load_settings(environ={"PROFILED_AUTH_TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip"})
    s = load_settings(environ={"PROFILED_AUTH_TRUSTED_PROXIES": "10.0.0.0/8, ::1"})
    assert parse_networks(s.auth.trusted_proxies) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


# -- over the wire -------------------------------------------------------------


def connect_from(h, address):  # type: ignore[no-untyped-def]
    """A connection to the harness's site from ``address``."""
    proto = h.site.buildProtocol(address)
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=address
    )
    proto.makeConnection(transport)
    return proto, transport


def get_from(h, address, path="/v1/images/" + "0" * 32, extra=b""):  # type: ignore[no-untyped-def]
    proto, transport = connect_from(h, address)
    proto.dataReceived(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    [r] = parse_responses(transport.value())
    return r


def test_per_address_limit_answers_429_with_retry_after():
    """Past requests_per_minute_per_ip a client gets 429/114 with Retry-After; others do not."""
    h = make_harness({"PROFILED_AUTH_REQUESTS_PER_MINUTE_PER_IP": "2"})
    a = IPv4Address("TCP", "198.51.100.1", 5000)
    assert get_from(h, a).status == 404
    assert get_from(h, a).status == 404
    r = get_from(h, a)
    assert r.status == 429
    assert r.json()["errno"] == 114
    assert r.headers["retry-after"] == "30"
    assert get_from(h, IPv4Address("TCP", "198.51.100.2", 5000)).status == 404
    h.clock.advance(30)
    assert get_from(h, a).status == 404


def test_per_address_limit_covers_only_v1():
    """Ops endpoints and images are not counted against the per-address limit."""
    h = make_harness({"PROFILED_AUTH_REQUESTS_PER_MINUTE_PER_IP": "1"})
    a = IPv4Address("TCP", "198.51.100.1", 5000)
    for _ in range(3):
        assert get_from(h, a, "/__lbheartbeat__").status == 200
        assert get_from(h, a, "/a/" + "0" * 32).status == 404
    assert get_from(h, a).status == 404
    assert get_from(h, a).status == 429


def test_per_address_limit_refuses_uploads_before_the_body():
    """An upload over the per-address limit is answered 429 from its headers; nothing is read."""
    h = make_harness({"PROFILED_AUTH_REQUESTS_PER_MINUTE_PER_IP": "1"})
    a = IPv4Address("TCP", "198.51.100.1", 5000)
    assert get_from(h, a).status == 404
    proto, transport = connect_from(h, a)
    proto.dataReceived(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    [r] = parse_responses(transport.value())
    assert r.status == 429
    assert r.headers["connection"] == "close"
    assert "retry-after" in r.headers
    assert stored_original_count(h) == 0


def test_per_address_limit_keys_ipv6_by_64():
    """Two addresses of one IPv6 /64 share one allowance."""
    h = make_harness({"PROFILED_AUTH_REQUESTS_PER_MINUTE_PER_IP": "1"})
    assert get_from(h, IPv6Address("TCP", "2001:db8::1", 5000)).status == 404
    assert get_from(h, IPv6Address("TCP", "2001:db8::2", 5000)).status == 429
    assert get_from(h, IPv6Address("TCP", "2001:db8:0:1::1", 5000)).status == 404


def test_per_address_limit_behind_a_trusted_proxy():
    """Behind a trusted proxy clients are told apart by X-Forwarded-For; forging it fails."""
    h = make_harness(
        {
            "PROFILED_AUTH_REQUESTS_PER_MINUTE_PER_IP": "1",
            "PROFILED_AUTH_TRUSTED_PROXIES": "10.0.0.0/8",
        }
    )
    lb = IPv4Address("TCP", "10.0.0.2", 5000)
    one = b"X-Forwarded-For: 198.51.100.1\r\n"
    two = b"X-Forwarded-For: 198.51.100.2\r\n"
    forged = b"X-Forwarded-For: 192.0.2.99, 198.51.100.1\r\n"
    assert get_from(h, lb, extra=one).status == 404
    assert get_from(h, lb, extra=two).status == 404
    assert get_from(h, lb, extra=forged).status == 429
    # A client that is not a trusted proxy cannot pick its key.
    direct = IPv4Address("TCP", "198.51.100.3", 5000)
    assert get_from(h, direct, extra=b"X-Forwarded-For: 192.0.2.1\r\n").status == 404
    assert get_from(h, direct, extra=b"X-Forwarded-For: 192.0.2.2\r\n").status == 429


def test_per_principal_upload_limit():
    """Past uploads_per_minute a principal's uploads get 429; GETs are not counted."""
    h = make_harness({"PROFILED_AUTH_UPLOADS_PER_MINUTE": "2"})
    assert h.upload(jpeg()).status == 202
    image_id = h.upload(jpeg()).json()["id"]
    r = h.upload(jpeg())
    assert r.status == 429
    assert r.json()["errno"] == 114
    assert r.headers["retry-after"] == "30"
    assert h.request("GET", f"/v1/images/{image_id}").status == 200
    assert stored_original_count(h) == 2
    h.clock.advance(30)
    assert h.upload(jpeg()).status == 202


def test_limits_off_by_default():
    """With both limits at 0, many requests from one address and principal all pass."""
    h = make_harness()
    for _ in range(50):
        assert h.request("GET", "/v1/images/" + "0" * 32).status == 404
    for _ in range(10):
        assert h.upload(jpeg()).status == 202


def test_early_refusals_count_as_uploads_only_for_uploads():
    """A 429 to a GET is not counted in profiled_uploads; one to an upload is."""
    h = make_harness({"PROFILED_AUTH_REQUESTS_PER_MINUTE_PER_IP": "1"})
    a = IPv4Address("TCP", "198.51.100.1", 5000)
    assert get_from(h, a).status == 404
    assert get_from(h, a).status == 429
    proto, transport = connect_from(h, a)
    proto.dataReceived(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 10\r\n\r\n"
    )
    assert parse_responses(transport.value())[0].status == 429
    metrics = h.request("GET", "/metrics").body.decode()
    assert 'profiled_uploads_total{code="429",outcome="refused"} 1.0' in metrics
