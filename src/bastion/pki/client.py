"""Workload identities for service-to-service mutual TLS (docs/pki.md, "Service to
service"): an X.509-SVID from Bastion's CA, kept fresh, in an ``httpx`` transport.

    identity = WorkloadIdentity("spiffe://bastion.internal/ns/demo/sa/orders",
                                HttpIssuer("https://localhost:8443", token=get_token,
                                           verify="bastion-ca.pem"))
    await identity.start()             # the first certificate (raises if none can be had)
    async with httpx.AsyncClient(transport=identity.async_transport()) as client:
        await client.get("https://inventory.internal:8444/inventory/tea")
    await identity.aclose()

The private key is made here and never leaves the process: the CA sees a public key (in
process, :class:`CaIssuer`) or a CSR (over HTTP, :class:`HttpIssuer`, ``POST
/pki/certificates`` with a bearer token that may call ``bastion:IssueCertificate``).

Renewal happens at two thirds of the certificate's life (or on demand, :meth:`renew`) with
a new key; the new chain is loaded with ``load_cert_chain`` into the **same**
``ssl.SSLContext`` the transports use, so new connections present it while open ones keep
theirs (no restart, no failed request). A failed renewal is logged and retried with
exponential backoff while the old certificate serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.edge.tls import (
    RENEW_AT,
    CertKey,
    TlsError,
    load_into,
    parse_cert_key,
    renewal_time,
    server_context,
)

if TYPE_CHECKING:
    from bastion.pki.ca import CertificateAuthority

log = logging.getLogger("bastion.pki.client")
RETRY_MIN = 1.0  # seconds before the first retry of a failed renewal; doubled each time
RETRY_MAX = 60.0
Names = tuple[Sequence[str], Sequence[str]]  # (DNS names, IP addresses) besides the SPIFFE ID
MAX_RESPONSE = 256 * 1024  # bytes of a /pki/certificates answer read


class IssuanceError(Exception):
    """The CA did not issue a certificate (the message says why, never a key or token)."""


class Issuer(Protocol):
    """Where a workload's certificates come from."""

    async def issue(self, private_key: ec.EllipticCurvePrivateKey, spiffe_id: str,
                    ttl: int | None, names: Names) -> str:
        """The PEM chain (leaf first) certifying ``private_key``'s public key for
        ``spiffe_id`` (and ``names``: DNS names and IPs, for a workload that serves too);
        ``IssuanceError`` when refused."""
        ...

    async def trust_bundle(self) -> str:
        """The CA's roots, PEM."""
        ...


class CaIssuer:
    """In process, from a :class:`~bastion.pki.ca.CertificateAuthority`."""

    def __init__(self, ca: CertificateAuthority, *, requester: str) -> None:
        self.ca = ca
        self.requester = requester

    async def issue(self, private_key: ec.EllipticCurvePrivateKey, spiffe_id: str,
                    ttl: int | None, names: Names = ((), ())) -> str:
        from bastion.pki.errors import PkiError

        try:
            issued = await self.ca.issue(profile="workload", spiffe_id=spiffe_id,
                                         dns_names=names[0], ip_addresses=names[1],
                                         public_key=private_key.public_key(), ttl=ttl,
                                         requester=self.requester)
        except PkiError as exc:
            raise IssuanceError(f"{exc.code}: {exc}") from None
        return issued.pem_chain()

    async def trust_bundle(self) -> str:
        return await self.ca.trust_bundle_pem()


TokenSource = Callable[[], "str | Awaitable[str]"]


class HttpIssuer:
    """Over HTTP from Bastion's ``POST /pki/certificates`` (a CSR made here) with a bearer
    token from ``token`` (called for every request: it may refresh); the trust bundle from
    ``GET /pki/ca.crt``. ``verify`` is how Bastion's own server certificate is checked
    (an ``SSLContext``, a CA file, or True for the system's roots)."""

    def __init__(self, base_url: str, *, token: TokenSource,
                 verify: ssl.SSLContext | str | bool = True, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        # a CA file becomes a context once (httpx deprecates verify=<path>)
        self.verify = ssl.create_default_context(cafile=verify) if isinstance(verify, str) \
            else verify
        self.timeout = timeout

    async def _token(self) -> str:
        value = self.token()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise IssuanceError("the token source gave no token")
        return value

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, verify=self.verify,
                                 timeout=self.timeout, trust_env=False)

    async def issue(self, private_key: ec.EllipticCurvePrivateKey, spiffe_id: str,
                    ttl: int | None, names: Names = ((), ())) -> str:
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(d) for d in names[0]]
        try:
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in names[1]]
        except ValueError:
            raise IssuanceError("an IP address does not parse") from None
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])) \
            .add_extension(x509.SubjectAlternativeName(sans), critical=True) \
            .sign(private_key, hashes.SHA256())
        body: dict[str, Any] = {"csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                                "profile": "workload"}
        if ttl is not None:
            body["ttl"] = ttl
        headers = {"Authorization": f"Bearer {await self._token()}"}
        try:
            async with self._client() as client:
                r = await client.post("/pki/certificates", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise IssuanceError(f"the CA cannot be reached ({type(exc).__name__})") from None
        if r.status_code != 201:
            raise IssuanceError(f"the CA answered {r.status_code}: {_reason(r)}")
        try:
            chain = r.json()["chain"]
        except (ValueError, KeyError, TypeError):
            raise IssuanceError("the CA's answer is not a certificate") from None
        if not isinstance(chain, str) or len(chain) > MAX_RESPONSE:
            raise IssuanceError("the CA's answer is not a certificate")
        return chain

    async def trust_bundle(self) -> str:
        try:
            async with self._client() as client:
                r = await client.get("/pki/ca.crt")
        except httpx.HTTPError as exc:
            raise IssuanceError(f"the CA cannot be reached ({type(exc).__name__})") from None
        if r.status_code != 200 or "BEGIN CERTIFICATE" not in r.text:
            raise IssuanceError(f"the CA's trust bundle is unavailable ({r.status_code})")
        return r.text


def _reason(r: httpx.Response) -> str:
    try:
        data = r.json()
        return f"{data.get('error')}: {str(data.get('error_description', ''))[:200]}"
    except (ValueError, AttributeError):
        return r.reason_phrase


@dataclass(frozen=True)
class Svid:
    """The current certificate (leaf first, with its chain) and what was checked of it."""

    pair: CertKey

    @property
    def serial(self) -> str:
        return self.pair.serial

    @property
    def not_after(self) -> float:
        return self.pair.not_after

    @property
    def certificate(self) -> x509.Certificate:
        return self.pair.leaf


def client_context() -> ssl.SSLContext:
    """A TLS client context as strict as Bastion's server: TLS 1.2 at least, the peer's
    certificate and host name verified, RFC 5280 enforced."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_TRUSTED_FIRST
    return ctx


class WorkloadIdentity:
    """A workload's X.509-SVID for ``spiffe_id``, renewed in the background, in one
    ``ssl.SSLContext`` (:attr:`context`) that every transport from here shares."""

    def __init__(self, spiffe_id: str, issuer: Issuer, *, ttl: int | None = None,
                 dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
                 renew_at: float = RENEW_AT, retry_min: float = RETRY_MIN,
                 retry_max: float = RETRY_MAX) -> None:
        if not spiffe_id.startswith("spiffe://"):
            raise ValueError("a SPIFFE ID starts with spiffe://")
        if not 0 < renew_at < 1:
            raise ValueError("renew_at is a fraction of the certificate's life")
        self.spiffe_id = spiffe_id
        self.issuer = issuer
        self.ttl = ttl
        self.renew_at = renew_at
        self.retry_min, self.retry_max = retry_min, retry_max
        self.names: Names = (tuple(dns_names), tuple(ip_addresses))
        self.context = client_context()
        self._server: ssl.SSLContext | None = None
        self._pair: CertKey | None = None
        self._bundle = ""
        self.current: Svid | None = None
        self.renewals = 0
        self.failures = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Svid:
        """The first certificate and trust bundle (``IssuanceError`` if the CA refuses),
        then renewal in the background."""
        svid = await self.renew()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return svid

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> WorkloadIdentity:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- renewal ----------------------------------------------------------------------------
    async def renew(self) -> Svid:
        """A new key and certificate now, loaded into :attr:`context` (new connections
        present it); the trust bundle is refreshed too (loading is additive, so a new root
        joins). Raises ``IssuanceError``/``TlsError``; the current certificate stays."""
        async with self._lock:
            key = ec.generate_private_key(ec.SECP256R1())
            chain = await self.issuer.issue(key, self.spiffe_id, self.ttl, self.names)
            key_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            pair = parse_cert_key(chain.encode(), key_pem)
            if _spiffe_id(pair.leaf) != self.spiffe_id:
                raise IssuanceError("the certificate does not carry the SPIFFE ID asked for")
            bundle = await self.issuer.trust_bundle()
            _check_chain(pair, bundle)
            contexts = [c for c in (self.context, self._server) if c is not None]
            try:
                for context in contexts:
                    context.load_verify_locations(cadata=bundle)
            except (ssl.SSLError, ValueError):
                raise TlsError("the CA's trust bundle does not load") from None
            for context in contexts:
                load_into(context, pair)
            self._pair, self._bundle = pair, bundle
            old, self.current = self.current, Svid(pair)
            self.renewals += 1
        log.info("workload certificate for %s: serial %s (was %s), valid until %s",
                 self.spiffe_id, pair.serial, old.serial if old else "-",
                 pair.leaf.not_valid_after_utc.isoformat())
        return self.current

    def renew_soon(self) -> None:
        """Ask the background task to renew now (from any code on the loop)."""
        self._wake.set()

    async def _run(self) -> None:
        delay = self.retry_min
        failing = False
        while True:
            if not failing:  # wait for the renewal time (or renew_soon)
                current = self.current
                due = renewal_time(current.certificate, self.renew_at) if current else 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(due - time.time(), 0.0))
            self._wake.clear()
            try:
                await self.renew()
                delay, failing = self.retry_min, False
            except Exception as exc:  # the CA or the network: retried, the old one serves
                self.failures += 1
                failing = True
                left = (self.current.not_after - time.time()) if self.current else 0.0
                log.error("workload certificate renewal for %s failed (%s: %s); the current "
                          "one (%s) has %.0f s left, retrying in %.1f s", self.spiffe_id,
                          type(exc).__name__, exc,
                          self.current.serial if self.current else "-", max(left, 0), delay)
                with contextlib.suppress(TimeoutError):  # renew_soon() retries at once
                    await asyncio.wait_for(self._wake.wait(), delay)
                delay = min(delay * 2, self.retry_max)

    def server_context(self) -> ssl.SSLContext:
        """A server ``SSLContext`` presenting this identity (Bastion's TLS settings) that
        requires a client certificate chaining to the CA; renewed with the client one.
        For uvicorn: ``ssl_context_factory=lambda config, default: ctx``."""
        if self._server is None:
            ctx = server_context("required")
            if self._pair is not None:
                ctx.load_verify_locations(cadata=self._bundle)
                load_into(ctx, self._pair)
            self._server = ctx
        return self._server

    # --- transports ---------------------------------------------------------------------------
    def async_transport(self, **options: Any) -> httpx.AsyncHTTPTransport:
        """An ``httpx.AsyncHTTPTransport`` presenting this identity and trusting the CA."""
        return httpx.AsyncHTTPTransport(verify=self.context, trust_env=False, **options)

    def transport(self, **options: Any) -> httpx.HTTPTransport:
        """The same for synchronous ``httpx.Client`` (renewal still runs on the event loop
        where :meth:`start` was awaited)."""
        return httpx.HTTPTransport(verify=self.context, trust_env=False, **options)


def _check_chain(pair: CertKey, bundle: str) -> None:
    """Each certificate of the new chain is signed by the next, the last by a root of the
    trust bundle, before any context gets it (the peers' OpenSSL then validates the whole
    path: validity, name constraints, key usages)."""
    try:
        roots = x509.load_pem_x509_certificates(bundle.encode())
        chain = x509.load_pem_x509_certificates(pair.cert_pem)
    except ValueError:
        raise IssuanceError("the certificate or the trust bundle does not parse") from None
    try:
        for cert, issuer in zip(chain, chain[1:], strict=False):
            cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise IssuanceError("the certificate chain does not verify") from None
    for root in roots:
        with contextlib.suppress(ValueError, TypeError, InvalidSignature):
            chain[-1].verify_directly_issued_by(root)
            return
    raise IssuanceError("the certificate does not chain to the CA's trust bundle")


def _spiffe_id(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None


def peer_spiffe_id(scope: Any) -> str | None:
    """The SPIFFE ID of the verified client certificate of an ASGI request (the TLS
    extension's leaf), for services authorizing their callers."""
    from bastion.edge.tls import mtls_spiffe_id

    return mtls_spiffe_id(scope)
