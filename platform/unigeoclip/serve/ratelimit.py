"""Failed-auth rate limit: an address that keeps sending wrong keys is refused for a while, right key or not.

After ``limit`` 401s within ``window_s`` seconds, every ``/v1/*`` request (and every ``/metrics`` scrape)
from that address is a 429 with ``Retry-After`` until its oldest failure leaves the window. A correct key
is refused too while the address is blocked: answering it would let a guesser tell right from wrong.

Counts are per gateway replica (with N replicas an address gets at most N x ``limit`` tries per window)
and held for at most ``max_addresses`` addresses (the least recently failing are forgotten first), so a
flood of spoofed addresses cannot grow a replica's memory.

The address is the TCP peer's, unless the peer is one of ``trusted_proxies`` (CIDRs): then it is the last
``X-Forwarded-For`` hop that is not itself a trusted proxy (the hops left of it are the client's to write).
Behind a load balancer or ingress that appends ``X-Forwarded-For``, list its addresses; otherwise every
client shares the proxy's address and one guesser blocks them all.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` -> networks; a bad entry raises ``ValueError`` naming it."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {cidr!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(out)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: tuple[Network, ...]) -> str:
    """The address a request is counted under: ``peer``, or the hop a trusted proxy saw (module docstring)."""
    peer = peer or "unknown"
    if not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer  # every hop a trusted proxy: the first is as near the client as we get


class AuthFailures:
    """Sliding-window count of failed authentications per address (``now`` is a monotonic clock)."""

    def __init__(self, limit: int, window_s: float, max_addresses: int = 65_536) -> None:
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """Addresses with a failure still held."""
        return len(self._failures)

    def retry_after(self, address: str, now: float) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it is not blocked."""
        if self.limit <= 0 or address not in self._failures:
            return None
        times = self._failures[address]
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(self.window_s - (now - times[0])))

    def failed(self, address: str, now: float) -> None:
        """Record a failed authentication of ``address`` at ``now``; past ``max_addresses`` the stalest address goes."""
        if self.limit <= 0:
            return
        times = self._failures.pop(address, None) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[address] = times  # most recently failing last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
