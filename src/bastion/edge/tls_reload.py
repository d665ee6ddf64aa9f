"""TLS certificate and key files (docs/tls.md): read once and checked (parse, key matches
the certificate, not expired, a key type OpenSSL serves) before they reach a live
``SSLContext``; hot reload of that context's certificate (``TlsReloader``) when the files
change, on SIGHUP, or when told. ``bastion.edge.tls`` re-exports these names."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

log = logging.getLogger("bastion.tls")

SETTLE = 2.0  # seconds after a change in which a failing pair of files may be half-written
WARN_EVERY = 86400.0  # seconds between expiry warnings for one certificate
MIN_RSA_BITS = 2048


class TlsError(Exception):
    """A certificate, key or trust bundle that cannot be used; the message names the file
    and the reason (never key material)."""


@dataclass(frozen=True)
class CertKey:
    """A certificate chain and its private key, read once and checked."""

    cert_pem: bytes
    key_pem: bytes
    leaf: x509.Certificate
    key_type: str

    @property
    def serial(self) -> str:
        return format(self.leaf.serial_number, "x")

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()


def _key_type(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise TlsError(f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
        return "rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ec"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "ed448"
    raise TlsError(f"an unsupported key type ({type(key).__name__})")


def parse_cert_key(cert_pem: bytes, key_pem: bytes, *, now: float | None = None) -> CertKey:
    """Check a chain and key before they reach a live context (``TlsError`` says why)."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError("the certificate file holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError("the key file holds no unencrypted PEM private key") from None
    key_type = _key_type(key)
    leaf = chain[0]
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, raw) != \
            key.public_key().public_bytes(serialization.Encoding.DER, raw):
        raise TlsError("the key does not match the certificate")
    if leaf.not_valid_after_utc.timestamp() <= (time.time() if now is None else now):
        raise TlsError(f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} "
                       "UTC")
    return CertKey(cert_pem, key_pem, leaf, key_type)


def read_cert_key(cert: Path, key: Path) -> CertKey:
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return parse_cert_key(cert_pem, key_pem)


@contextlib.contextmanager
def _as_files(*blobs: bytes) -> Iterator[list[str]]:
    """Paths OpenSSL can open holding ``blobs`` (memory files where Linux has them), so a
    context loads exactly the bytes that were checked, whatever happens to the files."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds: list[int] = []
        try:
            for blob in blobs:
                fd = os.memfd_create("bastion-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # pragma: no cover - not Linux
        paths = []
        for i, blob in enumerate(blobs):
            path = os.path.join(directory, str(i))
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(blob)
            paths.append(path)
        yield paths


def load_into(context: ssl.SSLContext, pair: CertKey) -> None:
    """Load ``pair`` into ``context``, first into a scratch context: OpenSSL would leave the
    live one without a usable key if the load failed halfway."""
    with _as_files(pair.cert_pem, pair.key_pem) as (cert_file, key_file):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise TlsError("OpenSSL refuses the certificate or key "
                           f"({exc.reason or exc.strerror})") from None
        context.load_cert_chain(cert_file, key_file)


class TlsReloader:
    """The certificate of one ``SSLContext``, re-read from ``cert``/``key`` when they change
    (``check``: inode, size and mtime; ``run`` polls, SIGHUP asks at once) or when told
    (``reload``). A file that cannot be used is logged and the current certificate kept."""

    def __init__(self, context: ssl.SSLContext, cert: Path, key: Path, *,
                 source: str = "file", warn_days: float = 0.0) -> None:
        self.context = context
        self.cert, self.key = cert, key
        self.source = source  # "file" or "internal_ca", the metrics' label
        self.warn_days = warn_days
        self.current: CertKey | None = None
        self.reloads = 0
        self.failures = 0
        self._seen: tuple[tuple[int, int, int], ...] | None = None
        self._warned = 0.0
        self._wake = asyncio.Event()

    def _signature(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            return tuple((s.st_ino, s.st_size, s.st_mtime_ns)
                         for s in (os.stat(self.cert), os.stat(self.key)))
        except OSError:
            return None

    def load(self) -> CertKey:
        """The first load: raises ``TlsError`` (the server must not start without one)."""
        self._seen = self._signature()
        try:
            pair = read_cert_key(self.cert, self.key)
            load_into(self.context, pair)
        except TlsError as exc:
            raise TlsError(f"{self.cert} / {self.key}: {exc}") from None
        self.current = pair
        self.warn_expiry()
        return pair

    def reload(self, *, settling: bool = False) -> bool:
        """Re-read the files now; whether the context has their certificate. ``settling``:
        the files changed a moment ago, so a failure may be a half-done replacement (the
        key written, not yet the certificate): it is retried at the next check, unlogged."""
        self._seen = self._signature()
        try:
            pair = read_cert_key(self.cert, self.key)
            if self.current is not None and pair.key_type != self.current.key_type:
                raise TlsError(f"the key type changed ({self.current.key_type} to "
                               f"{pair.key_type}): restart the server to switch")
            load_into(self.context, pair)
        except TlsError as exc:
            if settling:
                self._seen = None  # look again next time
                return False
            self.failures += 1
            log.error("TLS certificate not reloaded, the current one (serial %s) stays: "
                      "%s / %s: %s", self.current.serial if self.current else "-", self.cert,
                      self.key, exc)
            return False
        old, self.current = self.current, pair
        self.reloads += 1
        log.info("TLS certificate reloaded: serial %s (was %s), valid until %s", pair.serial,
                 old.serial if old else "-", pair.leaf.not_valid_after_utc.isoformat())
        self._warned = 0.0
        self.warn_expiry()
        return True

    def check(self) -> bool:
        """Reload if the files changed since they were last read."""
        signature = self._signature()
        if signature is None:
            if self._seen is not None:
                log.warning("a TLS certificate or key file is gone (%s, %s); the current "
                            "certificate stays", self.cert, self.key)
                self._seen = None
            return False
        if signature == self._seen:
            return False
        newest = max(mtime for _, _, mtime in signature) / 1e9
        return self.reload(settling=time.time() - newest < SETTLE)

    def wake(self) -> None:
        """Ask ``run`` to reload now, changed or not (the SIGHUP handler)."""
        self._wake.set()

    def warn_expiry(self, now: float | None = None) -> None:
        """Log a warning (once a day) while the certificate has under ``warn_days`` left."""
        if self.current is None or self.warn_days <= 0:
            return
        now = time.time() if now is None else now
        left = self.current.not_after - now
        if left < self.warn_days * 86400 and now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("the TLS certificate %s (serial %s) expires in %.1f days, on %s: "
                        "replace the files (they are reloaded without a restart)", self.cert,
                        self.current.serial, max(left, 0) / 86400,
                        self.current.leaf.not_valid_after_utc.isoformat())

    async def run(self, interval: float) -> None:
        """Check every ``interval`` seconds (0: only when woken) and warn about expiry."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval or None)
            if self._wake.is_set():
                self._wake.clear()
                self.reload()
            else:
                self.check()
            self.warn_expiry()
