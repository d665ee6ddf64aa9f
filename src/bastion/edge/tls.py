"""TLS for Bastion's server (docs/tls.md): the ``SSLContext`` (TLS 1.2 at least, 1.3
preferred, AEAD ciphers with forward secrecy only, ALPN ``http/1.1``); hot reload of its
certificate; a server certificate from the internal CA when none is given, renewed at two
thirds of its life; client certificates (mTLS) with a per-request revocation check; and the
ASGI TLS extension (``scope["extensions"]["tls"]``).

    serving = TlsServing(server, settings, provider=lambda: server.provider)
    serving.prepare()                  # file certificates, a file trust bundle (TlsError)
    uvicorn.run(serving, ssl_context_factory=serving.context_factory, ...)

Hot reload calls ``load_cert_chain`` on the same ``SSLContext``: OpenSSL copies the
certificate into each connection when it is accepted, so new handshakes get the new one and
live connections keep theirs. New files are read once and checked (parse, key matches the
certificate, not expired, same key type) before the live context is touched: a bad file is
logged and the old certificate kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import secrets
import signal
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.edge.problem import problem

log = logging.getLogger("bastion.tls")

# Mozilla "intermediate" for TLS 1.2 without DHE: ECDHE key exchange, AEAD only. TLS 1.3's
# suites are all AEAD with forward secrecy and stay OpenSSL's default.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"))
ALPN = ("http/1.1",)
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
RENEW_AT = 2 / 3  # of a certificate's life, the internal CA's server certificate is renewed
RETRY = 60.0  # seconds between attempts when renewal fails
SETTLE = 2.0  # seconds after a change in which a failing pair of files may be half-written
WARN_EVERY = 86400.0  # seconds between expiry warnings for one certificate
MIN_RSA_BITS = 2048
TLS_DIR = "tls"  # under data_dir: the internal CA's server certificate


class TlsError(Exception):
    """A certificate, key or trust bundle that cannot be used; the message names the file
    and the reason (never key material)."""


def server_context(mtls: str = "off") -> ssl.SSLContext:
    """A server ``SSLContext`` without a certificate yet (``TlsReloader`` loads it). With
    ``mtls`` ``optional`` or ``required`` it asks for a client certificate and verifies it
    (``load_verify_locations`` adds the trust anchors): chain to a trusted root, validity,
    name constraints, and the purpose ``sslclient`` (an EKU without clientAuth is refused);
    ``VERIFY_X509_STRICT`` refuses certificates that break RFC 5280."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(ALPN))
    if mtls not in ("off", "optional", "required"):
        raise ValueError("mtls must be off, optional or required")
    if mtls != "off":
        ctx.verify_mode = ssl.CERT_REQUIRED if mtls == "required" else ssl.CERT_OPTIONAL
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_TRUSTED_FIRST
    return ctx


# --- certificate and key files ---------------------------------------------------------------

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


# --- the internal CA's server certificate ---------------------------------------------------

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


# --- client certificates and the ASGI TLS extension -----------------------------------------

@dataclass(frozen=True)
class ClientCert:
    """What Bastion reads from a verified client certificate."""

    pem: str
    name: str  # RFC 4514 subject
    serial: str  # lower-case hex, as the internal CA writes it
    spiffe_id: str | None  # the one spiffe:// URI SAN (X.509-SVID), if exactly one


@functools.lru_cache(maxsize=4096)
def client_certificate(pem: str) -> ClientCert:
    """Parsed once per distinct certificate (connections and requests reuse it)."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    spiffe = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) == 1 and uris[0].startswith("spiffe://"):
            spiffe = uris[0]  # SPIFFE X.509-SVID §2: exactly one URI SAN
    except x509.ExtensionNotFound:
        pass
    return ClientCert(pem, cert.subject.rfc4514_string(), format(cert.serial_number, "x"),
                      spiffe)


@functools.cache
def _cipher_ids() -> dict[str, int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL")
    return {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection (None when it is not TLS). The client
    certificate is there only when OpenSSL verified it (mTLS optional or required)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    chain: list[str] = []
    name = None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        cert = client_certificate(ssl.DER_cert_to_PEM_cert(der))
        chain, name = [cert.pem], cert.name
    cipher = ssl_object.cipher()
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_name": name,
            "client_cert_error": None,
            "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": _cipher_ids().get(cipher[0]) if cipher else None}


def verified_client(scope: Scope) -> ClientCert | None:
    """The connection's verified client certificate, from the ASGI TLS extension."""
    tls = (scope.get("extensions") or {}).get("tls")
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    if not chain:
        return None
    return client_certificate(chain[0])


def mtls_spiffe_id(scope: Scope) -> str | None:
    """IAM's ``bastion:MtlsSpiffeId``: the verified client certificate's SPIFFE ID."""
    cert = verified_client(scope)
    return cert.spiffe_id if cert is not None else None


class RevocationCheck:
    """A client certificate's status at the CA, cached ``ttl`` seconds per serial.
    ``strict`` (the trust bundle is the internal CA's): a serial the CA does not know is
    refused too."""

    MAX = 50_000

    def __init__(self, ca: CertificateSource, *, ttl: float, strict: bool) -> None:
        self.ca = ca
        self.ttl = ttl
        self.strict = strict
        self._cache: dict[str, tuple[float, str]] = {}

    async def status(self, serial: str) -> str:
        now = time.monotonic()
        hit = self._cache.get(serial)
        if hit is not None and hit[0] > now:
            return hit[1]
        status = await self.ca.status(serial)
        if len(self._cache) >= self.MAX:
            self._cache.clear()
        self._cache[serial] = (now + self.ttl, status)
        return status

    async def refusal(self, serial: str) -> str | None:
        """None when the certificate may be used, else why not: revoked, unknown."""
        status = await self.status(serial)
        if status == "good" or (status == "unknown" and not self.strict):
            return None
        return "revoked" if status == "revoked" else "unknown"


# --- metrics ----------------------------------------------------------------------------------

class TlsCollector(Collector):
    """``bastion_tls_certificate_expiry_timestamp_seconds`` and reload counts, read when
    scraped."""

    def __init__(self, reloader: TlsReloader) -> None:
        self.reloader = reloader

    def collect(self) -> Iterable[Metric]:
        r = self.reloader
        expiry = GaugeMetricFamily("bastion_tls_certificate_expiry_timestamp_seconds",
                                   "notAfter of the server's TLS certificate (Unix time).",
                                   labels=["source"])
        if r.current is not None:
            expiry.add_metric([r.source], r.current.not_after)
        yield expiry
        reloads = CounterMetricFamily("bastion_tls_certificate_reloads", "Hot reloads of "
                                      "the server's TLS certificate by outcome.",
                                      labels=["outcome"])
        reloads.add_metric(["loaded"], r.reloads)
        reloads.add_metric(["failed"], r.failures)
        yield reloads


# --- the served application -------------------------------------------------------------------

class TlsServing:
    """Pure ASGI around the served app: at lifespan startup (before uvicorn listens) the
    context gets its certificate (files, or the internal CA's) and its mTLS trust anchors;
    reload and renewal run in the background; every HTTP request with a client certificate
    is checked for revocation (401 when revoked, 503 when the CA cannot say)."""

    def __init__(self, app: ASGIApp, settings: Any, *,
                 provider: Callable[[], Any] = lambda: None,
                 metrics: Callable[[], Any] = lambda: None) -> None:
        self.app = app
        self.settings = settings
        self.provider = provider
        self.metrics = metrics
        self.context = server_context(settings.mtls)
        self.reloader: TlsReloader | None = None
        self.internal: InternalCertificate | None = None
        self.revocation: RevocationCheck | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sighup = False

    def context_factory(self, config: Any, default: Any) -> ssl.SSLContext:
        """uvicorn's ``ssl_context_factory``."""
        del config, default
        return self.context

    @property
    def tls_dir(self) -> Path:
        return Path(self.settings.data_dir) / TLS_DIR

    def prepare(self) -> None:
        """What needs no provider: file certificates and a file trust bundle (TlsError)."""
        s = self.settings
        if s.tls_cert is not None:
            self.reloader = TlsReloader(self.context, Path(s.tls_cert), Path(s.tls_key),
                                        warn_days=s.tls_expiry_warning_days)
            self.reloader.load()
        if s.mtls != "off" and s.mtls_trust_bundle is not None:
            try:
                self.context.load_verify_locations(cafile=str(s.mtls_trust_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"mtls_trust_bundle {s.mtls_trust_bundle}: cannot load it "
                               f"({getattr(exc, 'reason', None) or exc.strerror})") from None

    async def start(self) -> None:
        s = self.settings
        provider = self.provider()
        ca = getattr(provider, "ca", None)
        if self.reloader is None:
            if ca is None:
                raise TlsError("no certificate: pass tls_cert and tls_key")
            names = server_names(s.tls_hostnames, s.effective_issuer)
            self.internal = InternalCertificate(ca, self.tls_dir, *names)
            await self.internal.ensure()
            self.reloader = TlsReloader(self.context, self.internal.cert, self.internal.key,
                                        source="internal_ca")
            self.reloader.load()
            self._spawn(self.internal.run(self.reloader, self._trust_internal))
        elif s.tls_reload_interval > 0:
            self._spawn(self.reloader.run(s.tls_reload_interval))
        if s.mtls != "off":
            if s.mtls_trust_bundle is None:
                if ca is None:
                    raise TlsError("mtls needs mtls_trust_bundle or the internal CA")
                await self._trust_internal()
            if ca is not None:
                self.revocation = RevocationCheck(ca, ttl=s.mtls_revocation_cache_ttl,
                                                  strict=s.mtls_trust_bundle is None)
        self._watch_sighup()
        metrics = self.metrics()
        if metrics is not None:
            metrics.registry.register(TlsCollector(self.reloader))

    async def _trust_internal(self) -> None:
        """The internal CA's roots and current intermediate as mTLS trust anchors (loading
        is additive: after a rotation the new intermediate joins)."""
        ca = getattr(self.provider(), "ca", None)
        if self.settings.mtls == "off" or self.settings.mtls_trust_bundle is not None \
                or ca is None:
            return
        self.context.load_verify_locations(
            cadata=await ca.trust_bundle_pem() + await ca.chain_pem())

    def _spawn(self, job: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(job))

    def _watch_sighup(self) -> None:
        reloader = self.reloader
        if reloader is None:
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.wake)
            self._sighup = True
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            log.debug("SIGHUP not watched (not the main thread)")
        if not self._tasks or self.internal is not None:  # SIGHUP needs a loop to wake
            self._spawn(reloader.run(0))

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] == "http" and self.revocation is not None:
            cert = verified_client(scope)
            if cert is not None and not await self._admit(cert, scope, receive, send):
                return
        await self.app(scope, receive, send)

    async def _admit(self, cert: ClientCert, scope: Scope, receive: Receive,
                     send: Send) -> bool:
        assert self.revocation is not None
        try:
            refusal = await self.revocation.refusal(cert.serial)
        except Exception:  # the CA cannot say: fail closed
            log.exception("client certificate status unavailable (serial %s)", cert.serial)
            await problem(503, "the client certificate's status cannot be checked now",
                          headers={"Retry-After": "5"})(scope, receive, send)
            return False
        if refusal is None:
            return True
        client = scope.get("client")
        peer = str(client[0]) if client else None
        log.warning("refused a client certificate (%s): serial %s, subject %s, from %s",
                    refusal, cert.serial, cert.name, peer or "-")
        metrics = self.metrics()
        if metrics is not None:
            metrics.refused("authn", f"client_cert_{refusal}")
        audit = getattr(self.provider(), "audit", None)
        if audit is not None:
            try:
                await audit.emit("Authenticate", user_identity={
                    "type": "ClientCertificate", "principalId": cert.serial,
                    "subject": cert.name, "spiffeId": cert.spiffe_id}, source_ip=peer,
                    error_code=f"certificate_{refusal}",
                    error_message=f"the client certificate is {refusal}")
            except Exception:  # refused either way; the trail reports its own failures
                log.exception("the refusal of client certificate %s was not audited",
                              cert.serial)
        detail = "was revoked" if refusal == "revoked" else "is unknown to the CA"
        await problem(401, f"the client certificate {detail}")(scope, receive, send)
        return False

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.stop()  # before the app closes what renewal uses
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self.start()
                except Exception as exc:  # uvicorn logs the message and exits
                    await self.stop()
                    await send({"type": "lifespan.startup.failed",
                                "message": f"TLS could not start: {exc}"})
                    return
            await send(message)

        await self.app(scope, receive_wrapper, send_wrapper)
