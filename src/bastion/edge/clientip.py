"""The client's IP address behind trusted proxies: ``Forwarded`` (RFC 7239) or
``X-Forwarded-For``, read only when the connection's peer is a configured proxy.

    proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.7"], header="x-forwarded-for")
    ip = proxies.client_ip(peer="10.1.2.3", headers=scope["headers"])

Each proxy appends the address it received the request from, so the list reads left to
right from the client to the last proxy, and only its right end is trustworthy: whatever
the client sent is on the left. The client is therefore the *right-most address that is
not a trusted proxy* (RFC 7239 §5.2 and §8.1 on forged values; the same rule for
``X-Forwarded-For``). Anything unusable on the way (``unknown``, an obfuscated identifier
per RFC 7239 §6.3, garbage) ends the walk, and the last trusted address seen is used: the
proxy that relayed the request. A peer that is not a trusted proxy is the client, whatever
its headers say.

Only one header is read, the one the proxies are configured to write: a proxy that appends
to ``X-Forwarded-For`` leaves a client's ``Forwarded`` untouched, so reading both would let
the client choose. Parsing is bounded: at most :data:`MAX_HEADER_CHARS` characters from the
right end of the header and :data:`MAX_HOPS` hops; no regular expressions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ForwardingHeader = Literal["x-forwarded-for", "forwarded"]
MAX_HOPS = 32  # hops looked at, from the right; a longer chain is cut on the left
MAX_HEADER_CHARS = 4096  # of the header, from the right
MAX_ADDRESS_CHARS = 64  # "[v6%zone]:port" fits


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from addresses or CIDR blocks (``192.0.2.7``, ``10.0.0.0/8``, ``::1``);
    ValueError naming the bad entry (host bits set in a block are an error, not rounded)."""
    out: list[IPNetwork] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR block: {value!r}") from None
    return tuple(out)


def parse_address(text: str) -> IPAddress | None:
    """An address from one hop: ``192.0.2.1``, ``192.0.2.1:80``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:443``; IPv4-mapped IPv6 becomes IPv4. None for
    anything else (``unknown``, ``_hidden``, names, garbage)."""
    text = text.strip()
    if not text or len(text) > MAX_ADDRESS_CHARS:
        return None
    if text[0] == "[":  # RFC 7239 §6: IPv6 in brackets, optionally with a port
        end = text.find("]")
        if end < 0 or not _port_ok(text[end + 1:], allow_empty=True):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text, _, port = text.partition(":")
        if not _port_ok(":" + port):
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _port_ok(rest: str, *, allow_empty: bool = False) -> bool:
    if not rest:
        return allow_empty
    return rest[0] == ":" and 0 < len(rest) <= 6 and rest[1:].isascii() and rest[1:].isdigit()


def _split_top(value: str, sep: str) -> list[str]:
    """``value`` split at ``sep`` outside quoted-strings (RFC 9110 §5.6.4): a comma inside
    ``for="..."`` does not start a new element."""
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def forwarded_for(element: str) -> str | None:
    """The ``for`` parameter of one ``Forwarded`` element (RFC 7239 §4: pairs separated by
    ``;``, a value is a token or a quoted-string), unquoted; None when absent or repeated."""
    found: str | None = None
    for pair in _split_top(element, ";"):
        name, eq, value = pair.partition("=")
        if not eq or name.strip().lower() != "for":
            continue
        if found is not None:  # §4: each parameter MUST NOT occur more than once
            return None
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\", "")
        found = value
    return found


class TrustedProxies:
    """The proxies whose forwarding header is believed, and the one header they write."""

    def __init__(self, networks: Sequence[str], *,
                 header: ForwardingHeader = "x-forwarded-for") -> None:
        if header not in ("x-forwarded-for", "forwarded"):
            raise ValueError("header must be x-forwarded-for or forwarded")
        self.networks = parse_networks(networks)
        self.header = header
        self._header_bytes = header.encode()

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, ip: IPAddress | str | None) -> bool:
        if isinstance(ip, str):
            ip = parse_address(ip)
        if ip is None:
            return False
        return any(ip in net for net in self.networks)

    def hops(self, headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
        """The header's hops, left to right, at most the right-most :data:`MAX_HOPS`
        (several field lines are one list, RFC 9110 §5.3)."""
        lines = [v for k, v in headers if k == self._header_bytes]
        if not lines:
            return []
        raw = b",".join(lines)
        cut = len(raw) > MAX_HEADER_CHARS
        text = raw[-MAX_HEADER_CHARS:].decode("latin-1")
        # plain commas, never quote-aware across elements: the left part is the client's,
        # and an open quote there must not swallow the hops the proxies appended (no valid
        # address holds a comma, so a quoted comma only makes its own element unusable)
        elements = text.split(",")
        if cut:
            elements = elements[1:]  # the left-most piece may be a fragment of a hop
        elements = elements[-MAX_HOPS:]
        if self.header == "forwarded":
            return [forwarded_for(e) or "" for e in elements]
        return elements

    def client_ip(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The client's address: the peer itself unless it is trusted, else the right-most
        untrusted hop of the forwarding header (see the module docstring)."""
        peer_ip = parse_address(peer) if peer else None
        if peer_ip is None:
            return peer
        if not self.networks or not self.trusts(peer_ip):
            return str(peer_ip)
        client = peer_ip
        for hop in reversed(self.hops(headers)):
            ip = parse_address(hop)
            if ip is None:
                break  # unusable: the last trusted address relayed the request
            client = ip
            if not self.trusts(ip):
                break
        return str(client)
