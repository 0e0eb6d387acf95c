"""Rate limits: token buckets by key, and who the client is.

A ``TokenBuckets`` allows ``per_minute`` requests per key: a bucket holds at
most ``per_minute`` tokens (a minute's worth may come at once) and refills
continuously at ``per_minute / 60`` tokens a second. Time comes from an
injected clock, so tests move it with ``Clock.advance``.

Memory is bounded: buckets are kept in least-recently-used order, a bucket
idle long enough to have refilled is the same as no bucket and is dropped
as soon as it reaches the front, and past ``max_keys`` the oldest is
dropped whatever its state (the worst that does is to forgive that key).

``client_key`` names the client of a request for the per-address limit:
the TCP peer, or, when the peer is a trusted proxy, the rightmost
``X-Forwarded-For`` entry that is not a trusted proxy itself (entries to
the left of it were written by the client and prove nothing). IPv6
clients are keyed by their /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Keys remembered at most, per limiter.
MAX_KEYS = 100_000


@attrs.define
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """``per_minute`` events per key, in bursts of up to ``per_minute``."""

    def __init__(self, per_minute: int, clock: IReactorTime, max_keys: int = MAX_KEYS) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        #: Seconds after which an untouched bucket is full again.
        self.refill_seconds = self.capacity / self.rate
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> int | None:
        """Spend a token of ``key``: None when allowed, else whole seconds to wait (>= 1)."""
        now = self.clock.seconds()
        self._forget_idle(now)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
        else:
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            bucket = next(iter(self._buckets.values()))
            if now - bucket.stamp < self.refill_seconds:
                return
            self._buckets.popitem(last=False)


def parse_networks(entries: Sequence[str]) -> tuple[IPNetwork, ...]:
    """``auth.trusted_proxies`` as networks (config has checked them)."""
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(address: IPAddress) -> str:
    """The rate-limit key of an address: itself for IPv4, its /64 for IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress | str:
    """The client's address: the peer, or what trusted proxies say it is.

    ``peer`` is the TCP peer's host; ``forwarded_for`` the X-Forwarded-For
    header lines in order. An unparsable peer is returned as it is.
    """
    current = _address(peer)
    if current is None:
        return peer
    if not trusted:
        return current
    hops = [h for line in forwarded_for for h in line.split(",")]
    while any(current in net for net in trusted) and hops:
        previous = _address(hops.pop())
        if previous is None:
            break  # a trusted proxy wrote nonsense: keep the last address we know
        current = previous
    return current


def client_key(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork] = ()) -> str:
    """The per-address rate-limit key of a request."""
    address = client_address(peer, forwarded_for, trusted)
    return address if isinstance(address, str) else address_key(address)
