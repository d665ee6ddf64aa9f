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

Certificate files and their hot reload are in ``edge/tls_reload.py``, the internal CA's
server certificate and its renewal in ``edge/tls_internal.py``; this module re-exports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.edge.problem import problem
from bastion.edge.tls_internal import (
    RENEW_AT,
    RETRY,
    CertificateSource,
    InternalCertificate,
    renewal_time,
    server_names,
    write_private,
)
from bastion.edge.tls_reload import (
    MIN_RSA_BITS,
    SETTLE,
    WARN_EVERY,
    CertKey,
    TlsError,
    TlsReloader,
    load_into,
    parse_cert_key,
    read_cert_key,
)

log = logging.getLogger("bastion.tls")

# Mozilla "intermediate" for TLS 1.2 without DHE: ECDHE key exchange, AEAD only. TLS 1.3's
# suites are all AEAD with forward secrecy and stay OpenSSL's default.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"))
ALPN = ("http/1.1",)
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
TLS_DIR = "tls"  # under data_dir: the internal CA's server certificate


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
    is checked for revocation (401 when revoked, 503 when the CA cannot say). ``renew``:
    this process renews the internal CA's certificate; the other workers of ``serve
    --workers N`` (``renew=False``) reload the files it writes."""

    def __init__(self, app: ASGIApp, settings: Any, *,
                 provider: Callable[[], Any] = lambda: None,
                 metrics: Callable[[], Any] = lambda: None, renew: bool = True) -> None:
        self.app = app
        self.renew = renew
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

    async def ensure_certificate(self, provider: Any) -> None:
        """Without certificate files: have a fit certificate from the internal CA on disk
        (``serve`` does it once, before its workers start)."""
        if self.settings.tls_cert is None:
            await self._internal(provider.ca).ensure()

    def _internal(self, ca: CertificateSource) -> InternalCertificate:
        s = self.settings
        return InternalCertificate(ca, self.tls_dir,
                                   *server_names(s.tls_hostnames, s.effective_issuer))

    async def _follow(self, interval: float) -> None:
        """A worker that does not renew: reload what the renewing one writes."""
        assert self.reloader is not None
        while True:
            await asyncio.sleep(interval)
            if self.reloader.check():
                await self._trust_internal()

    async def start(self) -> None:
        s = self.settings
        provider = self.provider()
        ca = getattr(provider, "ca", None)
        if self.reloader is None:
            if ca is None:
                raise TlsError("no certificate: pass tls_cert and tls_key")
            self.internal = self._internal(ca)
            if self.renew:
                await self.internal.ensure()
            self.reloader = TlsReloader(self.context, self.internal.cert, self.internal.key,
                                        source="internal_ca")
            self.reloader.load()
            self._spawn(self.internal.run(self.reloader, self._trust_internal) if self.renew
                        else self._follow(s.tls_reload_interval or 5.0))
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


__all__ = ["ALPN", "CertKey", "CertificateSource", "ClientCert", "InternalCertificate",
           "MIN_RSA_BITS", "RENEW_AT", "RETRY", "RevocationCheck", "SETTLE", "TLS12_CIPHERS",
           "TLS_DIR", "TLS_VERSIONS", "TlsCollector", "TlsError", "TlsReloader", "TlsServing",
           "WARN_EVERY", "client_certificate", "load_into", "mtls_spiffe_id", "parse_cert_key",
           "read_cert_key", "renewal_time", "server_context", "server_names", "tls_extension",
           "verified_client", "write_private"]
