"""ACME fixtures: a Provider with ACME settings, an RFC 8555 client signing with joserfc over
the ASGI app, and real challenge responders on loopback sockets (an HTTP server for
http-01, a UDP DNS server for dns-01, a TLS server with ALPN acme-tls/1 for tls-alpn-01)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from joserfc import jws
from joserfc.jwk import ECKey, OctKey
from joserfc.jws import JWSRegistry

from bastion.app import build_app
from bastion.config import Settings
from bastion.oauth.provider import Provider
from bastion.runtime import open_provider
from tests.conftest import ISSUER, _reset, make_settings
from tests.live import free_port

REGISTRY = JWSRegistry(strict_check_header=False,
                       algorithms=["ES256", "ES384", "RS256", "EdDSA", "HS256"])
REGISTRY.max_header_length = 8192


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class HttpResponder:
    """http-01: serves /.well-known/acme-challenge/<token> from ``tokens``."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        token = path.rsplit("/", 1)[-1]
        body = self.tokens.get(token, "").encode() \
            if path.startswith("/.well-known/acme-challenge/") else b""
        status = b"200 OK" if body else b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> HttpResponder:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class DnsResponder(asyncio.DatagramProtocol):
    """dns-01: a tiny authoritative UDP DNS server answering TXT from ``records``."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.port = free_port()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        values = self.records.get(name, [])
        if question.rdtype == dns.rdatatype.TXT and values:
            response.answer.append(dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, dns.rdatatype.TXT,
                [f'"{v}"' for v in values]))
        else:
            response.set_rcode(3)  # NXDOMAIN
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)

    async def __aenter__(self) -> DnsResponder:
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.transport is not None
        self.transport.close()


ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


class TlsAlpnResponder:
    """tls-alpn-01: answers ALPN acme-tls/1 with a self-signed certificate for ``name``
    carrying the critical acmeIdentifier extension (RFC 8737 §3)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def start(self, name: str, key_authorization: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        digest = hashlib.sha256(key_authorization.encode()).digest()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + dt.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
                .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER,
                                                          b"\x04\x20" + digest), True)
                .sign(key, hashes.SHA256()))
        (self.tmp / "alpn.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.tmp / "alpn.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tmp / "alpn.crt", self.tmp / "alpn.key")
        ctx.set_alpn_protocols(["acme-tls/1"])

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=ctx)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class AcmeClient:
    """An RFC 8555 client over ``http``; ``kid`` is set once the account exists."""

    def __init__(self, http: httpx.AsyncClient, key: Any = None, alg: str = "ES256") -> None:
        self.http = http
        self.key = key if key is not None else ECKey.generate_key("P-256")
        self.alg = alg
        self.kid: str | None = None
        self.last_nonce: str | None = None

    async def nonce(self) -> str:
        r = await self.http.head("/acme/new-nonce")
        assert r.status_code == 200, r.text
        return str(r.headers["Replay-Nonce"])

    def sign(self, url: str, payload: Any, nonce: str | None, *, key: Any = None,
             alg: str | None = None, kid: str | None = None, jwk: bool = False,
             extra: dict[str, Any] | None = None) -> dict[str, str]:
        key = key if key is not None else self.key
        header: dict[str, Any] = {"alg": alg or self.alg, "url": url}
        if nonce is not None:
            header["nonce"] = nonce
        if jwk or (kid is None and self.kid is None):
            header["jwk"] = key.as_dict(private=False)
        else:
            header["kid"] = kid or self.kid
        header.update(extra or {})
        body = b"" if payload is None else json.dumps(payload).encode()
        if isinstance(key, OctKey) or header["alg"] in ("none",):
            raise ValueError("use sign_raw")
        return dict(jws.serialize_json({"protected": header}, body, key,
                                       algorithms=[header["alg"]], registry=REGISTRY))

    def sign_raw(self, header: dict[str, Any], payload: Any) -> dict[str, str]:
        """A flattened JWS over any protected header, checked by nothing on this side (a
        client library refuses to send what the server must refuse to accept)."""
        protected = b64(json.dumps(header).encode())
        body = b64(json.dumps(payload).encode())
        alg = JWSRegistry.algorithms[self.alg]
        signature = alg.sign(f"{protected}.{body}".encode(), self.key)
        return {"protected": protected, "payload": body, "signature": b64(signature)}

    async def post(self, path: str, payload: Any = None, **kw: Any) -> httpx.Response:
        url = path if path.startswith("http") else ISSUER + path
        nonce = kw.pop("nonce", None) or await self.nonce()
        body = self.sign(url, payload, nonce, **kw)
        return await self.send(url, body)

    async def send(self, url: str, body: dict[str, Any] | bytes,
                   content_type: str = "application/jose+json") -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = await self.http.post(url, content=data, headers={"Content-Type": content_type})
        self.last_nonce = r.headers.get("Replay-Nonce")
        return r

    async def register(self, **payload: Any) -> httpx.Response:
        payload.setdefault("termsOfServiceAgreed", True)
        r = await self.post("/acme/new-account", payload, jwk=True)
        if r.status_code in (200, 201):
            self.kid = r.headers["Location"]
        return r

    def thumbprint(self) -> str:
        return str(self.key.thumbprint())

    def key_authorization(self, token: str) -> str:
        return f"{token}.{self.thumbprint()}"

    async def wait(self, url: str, until: tuple[str, ...]) -> dict[str, Any]:
        """Poll (POST-as-GET) until the status is one of ``until``, without sleeping
        longer than the event loop's turn."""
        for _ in range(2000):
            r = await self.post(url)
            assert r.status_code == 200, r.text
            if r.json()["status"] in until:
                return dict(r.json())
            await asyncio.sleep(0.01)
        raise AssertionError(f"{url} stayed {r.json()['status']}")


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    assert "Replay-Nonce" in r.headers
    return str(r.json()["type"]).removeprefix("urn:ietf:params:acme:error:")


RESOLVE = "app.test=127.0.0.1,www.app.test=127.0.0.1,alpn.test=127.0.0.1"
# refusals that happen before the store is written run on SQLite alone; the flows that write
# (challenges, issuance, key change, EAB binding) run on both databases
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def http01() -> AsyncIterator[HttpResponder]:
    async with HttpResponder() as responder:
        yield responder


@pytest.fixture
async def dns01() -> AsyncIterator[DnsResponder]:
    async with DnsResponder() as responder:
        yield responder


@pytest.fixture
async def alpn(tmp_path: Path) -> AsyncIterator[TlsAlpnResponder]:
    responder = TlsAlpnResponder(tmp_path)
    yield responder
    await responder.close()


def acme_overrides(http01: HttpResponder, dns01: DnsResponder, alpn: TlsAlpnResponder,
                   **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "acme_allowed_identifiers": "*.test,localhost,127.0.0.1",
        "acme_validation_timeout": 5.0, "acme_http01_port": http01.port,
        "acme_dns_resolver": f"127.0.0.1:{dns01.port}", "acme_tls_alpn01_port": alpn.port,
        "acme_resolve": RESOLVE}
    base.update(over)
    return base


@pytest.fixture
def acme_extra(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings over the ACME defaults: ``parametrize("acme_extra", [{...}], indirect=True)``."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def acme_settings(tmp_path: Path, database_url: str, http01: HttpResponder,
                  dns01: DnsResponder, alpn: TlsAlpnResponder,
                  acme_extra: dict[str, Any]) -> Settings:
    return make_settings(tmp_path, database_url,
                         **acme_overrides(http01, dns01, alpn, **acme_extra))


@pytest.fixture
async def acme_provider(acme_settings: Settings) -> AsyncIterator[Provider]:
    await _reset(acme_settings.effective_database_url)
    p = await open_provider(acme_settings)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def acme_http(acme_provider: Provider) -> AsyncIterator[httpx.AsyncClient]:
    from bastion.app import close_app

    app = build_app(acme_provider)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client
    await close_app(app)


@pytest.fixture
async def client(acme_http: httpx.AsyncClient) -> AcmeClient:
    c = AcmeClient(acme_http)
    r = await c.register()
    assert r.status_code == 201, r.text
    return c


async def new_order(client: AcmeClient, *names: str) -> tuple[str, dict[str, Any]]:
    """A new order for DNS ``names``; returns its URL and body."""
    r = await client.post("/acme/new-order", {"identifiers": [
        {"type": "dns", "value": n} for n in names]})
    assert r.status_code == 201, r.text
    return str(r.headers["Location"]), dict(r.json())


async def challenge_of(client: AcmeClient, authz_url: str, kind: str) -> dict[str, Any]:
    r = await client.post(authz_url)
    assert r.status_code == 200, r.text
    found = [c for c in r.json()["challenges"] if c["type"] == kind]
    assert found, r.text
    return dict(found[0])


async def authorize_http01(client: AcmeClient, http01: HttpResponder, order: dict[str, Any],
                           order_url: str) -> dict[str, Any]:
    """Answer every authorization of ``order`` with http-01; the order once ready."""
    for authz_url in order["authorizations"]:
        ch = await challenge_of(client, authz_url, "http-01")
        http01.tokens[ch["token"]] = client.key_authorization(ch["token"])
        r = await client.post(ch["url"], {})
        assert r.status_code == 200, r.text
    return await client.wait(order_url, ("ready", "invalid"))


def make_csr(*names: str, key: Any = None, cn: str | None = None) -> tuple[bytes, Any]:
    """A DER CSR for DNS ``names`` (SAN) and its P-256 key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER), key
