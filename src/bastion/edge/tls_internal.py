"""Bastion's own server certificate from the internal CA when no certificate files are given
(docs/tls.md): kept under ``data_dir/tls``, reissued when the names change, and renewed at
two thirds of its life. ``bastion.edge.tls`` re-exports these names."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from cryptography import x509

from bastion.edge.tls_reload import TlsError, TlsReloader, read_cert_key

log = logging.getLogger("bastion.tls")

RENEW_AT = 2 / 3  # of a certificate's life, the internal CA's server certificate is renewed
RETRY = 60.0  # seconds between attempts when renewal fails


class _Issued(Protocol):
    @property
    def certificate(self) -> x509.Certificate: ...
    @property
    def serial(self) -> str: ...
    def pem_chain(self) -> str: ...
    def key_pem(self) -> str: ...


class CertificateSource(Protocol):
    """What TLS needs of ``bastion.pki.CertificateAuthority``."""

    def issue(self, *, profile: str = ..., dns_names: Sequence[str] = ...,
              ip_addresses: Sequence[str] = ..., requester: str) -> Awaitable[_Issued]: ...
    async def status(self, serial: int | str) -> str: ...
    async def trust_bundle_pem(self) -> str: ...
    async def chain_pem(self) -> str: ...


def server_names(hostnames: str, issuer: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) for the server certificate: ``tls_hostnames`` and the
    issuer's host."""
    dns: list[str] = []
    ips: list[str] = []
    host = urlsplit(issuer).hostname
    for name in [*hostnames.split(","), host or ""]:
        name = name.strip().lower()
        if not name:
            continue
        try:
            ip = str(ipaddress.ip_address(name))
        except ValueError:
            if name not in dns:
                dns.append(name)
            continue
        if ip not in ips:
            ips.append(ip)
    return tuple(dns), tuple(ips)


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return ({n.lower() for n in san.get_values_for_type(x509.DNSName)},
            {str(ip) for ip in san.get_values_for_type(x509.IPAddress)})


def renewal_time(cert: x509.Certificate, fraction: float = RENEW_AT) -> float:
    start = cert.not_valid_before_utc.timestamp()
    return start + (cert.not_valid_after_utc.timestamp() - start) * fraction


def write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically (a new file renamed over it), created with ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class InternalCertificate:
    """Bastion's own server certificate from the internal CA, kept in ``directory``
    (``server.crt`` with its chain, ``server.key`` 0600, ``ca.pem`` the trust bundle)."""

    def __init__(self, ca: CertificateSource, directory: Path, dns_names: Sequence[str],
                 ip_addresses: Sequence[str], *, renew_at: float = RENEW_AT) -> None:
        self.ca = ca
        self.renew_at = renew_at  # the fraction of its life after which it is renewed
        self.directory = directory
        self.dns_names, self.ip_addresses = tuple(dns_names), tuple(ip_addresses)
        self.cert = directory / "server.crt"
        self.key = directory / "server.key"
        self.bundle = directory / "ca.pem"

    async def ensure(self) -> None:
        """Keep the certificate on disk if it is still fit, else issue one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if not await self._fit():
            await self.issue()
        else:
            await self._write_bundle()

    async def _fit(self) -> bool:
        try:
            pair = read_cert_key(self.cert, self.key)
        except TlsError:
            return False
        dns, ips = _sans(pair.leaf)
        if dns != set(self.dns_names) or ips != {str(ipaddress.ip_address(i))
                                                 for i in self.ip_addresses}:
            return False  # tls_hostnames or the issuer changed
        if time.time() >= renewal_time(pair.leaf, self.renew_at):
            return False
        return await self.ca.status(pair.serial) == "good"  # revoked, or another CA's

    async def issue(self) -> str:
        issued = await self.ca.issue(profile="server", dns_names=self.dns_names,
                                     ip_addresses=self.ip_addresses,
                                     requester="bastion:serve")
        write_private(self.key, issued.key_pem().encode(), 0o600)
        write_private(self.cert, issued.pem_chain().encode(), 0o644)
        await self._write_bundle()
        log.info("TLS server certificate issued by the internal CA: serial %s, valid until "
                 "%s, for %s", issued.serial, issued.certificate.not_valid_after_utc.isoformat(),
                 ", ".join((*self.dns_names, *self.ip_addresses)))
        return issued.serial

    async def _write_bundle(self) -> None:
        write_private(self.bundle, (await self.ca.trust_bundle_pem()).encode(), 0o644)

    async def run(self, reloader: TlsReloader,
                  on_renewed: Callable[[], Awaitable[None]] | None = None) -> None:
        """Renew at two thirds of the certificate's life and hot-reload it; retry every
        ``RETRY`` seconds while the CA refuses."""
        while True:
            current = reloader.current
            due = renewal_time(current.leaf, self.renew_at) if current is not None else 0.0
            await asyncio.sleep(max(due - time.time(), 0.0))
            try:
                await self.issue()
                if not reloader.reload():
                    raise TlsError("the renewed certificate did not load")
                if on_renewed is not None:
                    await on_renewed()
            except Exception as exc:  # the CA or the disk: retried, the old cert serves on
                log.error("TLS server certificate renewal failed, retrying in %.0f s: %s",
                          RETRY, exc)
                await asyncio.sleep(RETRY)
