"""Challenge validation: ``http-01`` and ``dns-01`` (RFC 8555 §8.3, §8.4) and
``tls-alpn-01`` (RFC 8737).

Where a name points: ``acme_resolve`` (a static map, so tests and a laptop need no DNS) first,
then the system resolver. Every fetch is bounded: one connection, ``acme_validation_timeout``
seconds, at most 8 KiB of response, no redirects followed (a redirect is an
``incorrectResponse``: nothing an attacker points the validator at is fetched twice). Each
validator returns None on success or the ACME problem that says why not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from bastion.acme.errors import (
    AcmeProblem,
    Connection,
    Dns,
    IncorrectResponse,
    Malformed,
    Tls,
    Unauthorized,
)
from bastion.acme.jws import b64encode

MAX_RESPONSE = 8192
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nothing: never used for TLS
ACME_TLS_ALPN = "acme-tls/1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 §3


def parse_resolve(text: str) -> dict[str, str]:
    """``name=address,name=address`` (``acme_resolve``); ValueError on a bad entry."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, addr = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"acme_resolve: {item!r} is not name=address")
        out[name.strip().lower().rstrip(".")] = str(ipaddress.ip_address(addr.strip()))
    return out


def parse_nameserver(text: str) -> tuple[str, int]:
    """``acme_dns_resolver``: an IP address, ``v4:port`` or ``[v6]:port``; ValueError
    otherwise (dnspython asks nameservers by address)."""
    host, port = text.strip(), 53
    if host.startswith("["):
        host, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"acme_dns_resolver: {text!r} is not [address]:port")
        port = int(rest[1:]) if rest else 53
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p)
    if not 0 < port < 65536:
        raise ValueError(f"acme_dns_resolver: port {port} out of range")
    return str(ipaddress.ip_address(host)), port


@dataclass(frozen=True)
class Validator:
    resolve: Mapping[str, str]
    http01_port: int = 80
    tls_alpn01_port: int = 443
    dns_resolver: str = ""  # host or host:port; empty: the system's
    timeout: float = 10.0

    async def address(self, kind: str, value: str) -> str:
        if kind == "ip":
            return value
        hit = self.resolve.get(value.lower())
        if hit is not None:
            return hit
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                value, None, type=socket.SOCK_STREAM), self.timeout)
        except (TimeoutError, OSError):
            raise Dns(f"no address for {value}") from None
        if not infos:
            raise Dns(f"no address for {value}")
        return str(infos[0][4][0])

    async def validate(self, challenge: str, kind: str, value: str, token: str,
                       key_authorization: str) -> AcmeProblem | None:
        try:
            # one deadline for the whole validation: httpx's timeout is per read, so a
            # server dripping a byte at a time would otherwise hold it for hours
            async with asyncio.timeout(self.timeout):
                if challenge == "http-01":
                    await self.http01(kind, value, token, key_authorization)
                elif challenge == "dns-01":
                    await self.dns01(value, key_authorization)
                elif challenge == "tls-alpn-01":
                    await self.tls_alpn01(kind, value, key_authorization)
                else:
                    raise Malformed(f"unknown challenge type {challenge}")
        except AcmeProblem as problem:
            return problem
        except TimeoutError:
            return Connection(f"the {challenge} validation took longer than "
                              f"{self.timeout:g} s")
        return None

    # RFC 8555 §8.3
    async def http01(self, kind: str, value: str, token: str, key_authorization: str) -> None:
        addr = await self.address(kind, value)
        host = f"[{addr}]" if ":" in addr else addr
        url = f"http://{host}:{self.http01_port}/.well-known/acme-challenge/{token}"
        hostname = f"[{value}]" if kind == "ip" and ":" in value else value
        try:
            # http-01 is plain HTTP and follows no redirect: the client gets a TLS context
            # made once with no CA (httpx would otherwise load certifi's bundle per client,
            # most of an issuance's time; bench/pki.py)
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                         trust_env=False, verify=_NO_TLS) as client, \
                    client.stream("GET", url, headers={
                        "Host": hostname if self.http01_port == 80
                        else f"{hostname}:{self.http01_port}",
                        "User-Agent": "Bastion-ACME-validator"}) as resp:
                body = b""
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE:
                        raise Unauthorized("the challenge response is too large")
        except httpx.HTTPError as exc:
            raise Connection(f"fetching {url}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise Unauthorized(f"the challenge URL answered {resp.status_code}")
        # §8.3: the server MAY ignore trailing whitespace
        if not hmac.compare_digest(body.rstrip(), key_authorization.encode()):
            raise IncorrectResponse("the key authorization does not match")

    # RFC 8555 §8.4
    async def dns01(self, value: str, key_authorization: str) -> None:
        expected = b64encode(hashlib.sha256(key_authorization.encode()).digest())
        resolver = dns.asyncresolver.Resolver(configure=not self.dns_resolver)
        if self.dns_resolver:
            host, port = parse_nameserver(self.dns_resolver)
            resolver.nameservers = [host]
            resolver.port = port
        resolver.lifetime = self.timeout
        name = "_acme-challenge." + value.rstrip(".")
        try:
            answer = await resolver.resolve(name, "TXT")
        except dns.resolver.NXDOMAIN:
            raise Unauthorized(f"no TXT record at {name}") from None
        except dns.resolver.NoAnswer:
            raise Unauthorized(f"no TXT record at {name}") from None
        except dns.exception.DNSException as exc:
            raise Dns(f"TXT lookup of {name}: {type(exc).__name__}") from None
        for rr in answer:
            text = b"".join(rr.strings).decode("ascii", "replace")
            if hmac.compare_digest(text, expected):
                return
        raise IncorrectResponse(f"no TXT record at {name} has the expected value")

    # RFC 8737 §3
    async def tls_alpn01(self, kind: str, value: str, key_authorization: str) -> None:
        addr = await self.address(kind, value)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the certificate is self-signed by design
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols([ACME_TLS_ALPN])
        sni = value if kind == "dns" else ipaddress.ip_address(value).reverse_pointer
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                addr, self.tls_alpn01_port, ssl=ctx, server_hostname=sni), self.timeout)
        except (TimeoutError, OSError) as exc:
            raise Connection(f"TLS to {addr}:{self.tls_alpn01_port}: "
                             f"{type(exc).__name__}") from None
        try:
            tls = writer.get_extra_info("ssl_object")
            if tls is None or tls.selected_alpn_protocol() != ACME_TLS_ALPN:
                raise Tls("the server did not negotiate acme-tls/1")
            der = tls.getpeercert(binary_form=True)
        finally:
            writer.close()
        if not der:
            raise Tls("no certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            ext = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
        except (ValueError, x509.ExtensionNotFound):
            raise IncorrectResponse("the certificate lacks subjectAltName or "
                                    "acmeIdentifier") from None
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(n) for n in san.get_values_for_type(x509.IPAddress)]
        if (names, ips) != (([value], []) if kind == "dns" else ([], [value])):
            raise IncorrectResponse("the certificate must name exactly the identifier")
        digest = hashlib.sha256(key_authorization.encode()).digest()
        raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
        # the extension's value is the DER OCTET STRING of the digest: tag 4, length 32
        if not ext.critical or not hmac.compare_digest(raw, b"\x04\x20" + digest):
            raise IncorrectResponse("the acmeIdentifier does not match")
