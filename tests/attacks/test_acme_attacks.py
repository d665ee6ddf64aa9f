"""Attacks on the ACME server (docs/acme.md) by a client who has read the code: another
account's orders, authorizations, challenges and certificates (IDOR), revocation of what is
not yours, replayed nonces, CSRs that differ from the order by a SAN type, case, a trailing
dot or a wildcard, JWS payloads nested to blow the parser's stack, and the validator used as
an SSRF probe (redirects, slow answers, huge answers, internal addresses).

Each test passes when the attack fails. Two succeeded when first written and are fixed:
a deeply nested JSON payload or protected header raised RecursionError (a 500 and a stack
trace in the log per request); an http-01 responder dripping one byte per second held a
validation for hours (httpx's timeout is per read; the validation now has one deadline).
"""

# ruff: noqa: F811 - the ACME fixtures are imported by name and then requested by it
from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.acme.jws import b64encode
from tests.acme.conftest import (  # noqa: F401 - fixtures
    SQLITE_ONLY,
    AcmeClient,
    HttpResponder,
    acme_extra,
    acme_http,
    acme_provider,
    acme_settings,
    alpn,
    authorize_http01,
    challenge_of,
    client,
    dns01,
    http01,
    make_csr,
    new_order,
    problem_type,
)
from tests.conftest import ISSUER
from tests.live import free_port

pytestmark = [pytest.mark.anyio, SQLITE_ONLY]
REVOKE = ISSUER + "/acme/revoke-cert"


async def other_account(acme_http: httpx.AsyncClient) -> AcmeClient:
    c = AcmeClient(acme_http)
    assert (await c.register()).status_code == 201
    return c


async def issued(client: AcmeClient, http01: HttpResponder, *names: str
                 ) -> tuple[str, dict[str, Any], x509.Certificate, Any]:
    url, order = await new_order(client, *names)
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    csr, key = make_csr(*names)
    r = await client.post(order["finalize"], {"csr": b64encode(csr)})
    assert r.status_code == 200, r.text
    done = r.json()
    cert = x509.load_pem_x509_certificates((await client.post(done["certificate"])).content)[0]
    return url, done, cert, key


# --- another account's resources ------------------------------------------------------------

async def test_another_accounts_order_authz_challenge_and_cert_are_not_found(
        acme_provider, acme_http, client, http01):
    url, done, cert, _ = await issued(client, http01, "app.test")
    _, pending = await new_order(client, "www.app.test")
    ch = await challenge_of(client, pending["authorizations"][0], "http-01")
    mallory = await other_account(acme_http)
    for target in (url, done["finalize"], pending["authorizations"][0], ch["url"],
                   done["certificate"]):
        r = await mallory.post(target)
        assert r.status_code == 404, (target, r.text)
        r = await mallory.post(target, {})
        assert r.status_code in (403, 404), (target, r.text)
    # triggering the victim's challenge or deactivating its authorization does nothing
    r = await mallory.post(pending["authorizations"][0], {"status": "deactivated"})
    assert r.status_code == 404
    z = (await client.post(pending["authorizations"][0])).json()
    assert z["status"] == "pending" and all(c["status"] == "pending" for c in z["challenges"])
    # the victim's account and order list
    assert client.kid is not None
    for target in (client.kid, client.kid + "/orders"):
        r = await mallory.post(target)
        assert (r.status_code, problem_type(r)) == (403, "unauthorized"), target
    r = await mallory.post(client.kid, {"status": "deactivated"})
    assert r.status_code == 403
    r = await client.post(client.kid)
    assert r.json()["status"] == "valid"
    # finalizing the victim's ready order with a CSR for the victim's name
    url2, ready = await new_order(client, "www.app.test")
    assert (await authorize_http01(client, http01, ready, url2))["status"] == "ready"
    csr, _ = make_csr("www.app.test")
    r = await mallory.post(ready["finalize"], {"csr": b64encode(csr)})
    assert r.status_code == 404
    assert (await client.post(url2)).json()["status"] == "ready"


async def test_ids_longer_than_stored_or_with_path_tricks(client):
    for path in ("/acme/order/" + "a" * 5000, "/acme/authz/..%2Facct", "/acme/cert/" + "f" * 65,
                 "/acme/chall/x/http-01/extra", "/acme/chall/x/tls-alpn-01:8443",
                 "/acme/order/%00"):
        r = await client.post(path)
        assert r.status_code in (400, 403, 404), (path, r.text)


async def test_revoking_another_accounts_certificate(acme_provider, acme_http, client, http01):
    _, _, cert, _ = await issued(client, http01, "app.test")
    der = b64encode(cert.public_bytes(serialization.Encoding.DER))
    mallory = await other_account(acme_http)
    # with her account (kid), and with her account key as a bare jwk
    r = await mallory.post(REVOKE, {"certificate": der})
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")
    r = await mallory.post(REVOKE, {"certificate": der}, jwk=True)
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")
    # a certificate she forged with the victim's serial and subject, signed by her own key
    key = ec.generate_private_key(ec.SECP256R1())
    forged = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
              .public_key(key.public_key()).serial_number(cert.serial_number)
              .not_valid_before(cert.not_valid_before_utc)
              .not_valid_after(cert.not_valid_after_utc).sign(key, hashes.SHA256()))
    from joserfc.jwk import ECKey
    as_key = AcmeClient(acme_http, key=ECKey.import_key(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())))
    r = await as_key.post(REVOKE, {"certificate": b64encode(forged.public_bytes(
        serialization.Encoding.DER))}, jwk=True)
    assert (r.status_code, problem_type(r)) == (404, "malformed")
    assert await acme_provider.ca.status(cert.serial_number) == "good"


async def test_nonce_replay_across_endpoints(client):
    nonce = await client.nonce()
    r = await client.post("/acme/new-order", {"identifiers": [
        {"type": "dns", "value": "app.test"}]}, nonce=nonce)
    assert r.status_code == 201
    for path in ("/acme/new-order", client.kid):
        r = await client.post(path, None, nonce=nonce)
        assert (r.status_code, problem_type(r)) == (400, "badNonce")
    # the nonce of a problem response is fresh, and used once too
    fresh = r.headers["Replay-Nonce"]
    assert (await client.post(client.kid, None, nonce=fresh)).status_code == 200
    r = await client.post(client.kid, None, nonce=fresh)
    assert problem_type(r) == "badNonce"


async def test_concurrent_requests_with_one_nonce_only_one_succeeds(client):
    nonce = await client.nonce()
    bodies = [client.sign(client.kid, None, nonce) for _ in range(8)]
    results = await asyncio.gather(*(client.send(client.kid, b) for b in bodies))
    assert sorted(r.status_code for r in results) == [200] + [400] * 7


# --- CSRs that are not the order ------------------------------------------------------------

def csr_with(*sans: x509.GeneralName, cn: str | None = None, key: Any = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


D = x509.DNSName


@pytest.mark.parametrize("csr", [
    csr_with(D("app.test"), x509.UniformResourceIdentifier(
        "spiffe://bastion.internal/ns/prod/sa/admin")),
    csr_with(D("app.test"), x509.RFC822Name("admin@app.test")),
    csr_with(D("app.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
    csr_with(D("app.test."),),
    csr_with(D("app.test"), cn="evil.test"),
    csr_with(D("*.app.test")),
    csr_with(D("app.test"), D("other.test")),
    csr_with(cn="other.test"),
    csr_with(D("app.test"), x509.UniformResourceIdentifier("https://app.test/")),
], ids=["extra-spiffe-uri", "extra-email", "extra-ip", "trailing-dot", "cn-other-name",
        "wildcard-for-apex", "extra-dns", "cn-only-other", "extra-https-uri"])
async def test_finalize_with_a_csr_that_is_not_the_order(acme_provider, client, http01, csr):
    url, order = await new_order(client, "app.test")
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    r = await client.post(order["finalize"], {"csr": b64encode(csr)})
    assert r.status_code in (400, 403), r.text
    assert problem_type(r) in ("badCSR", "rejectedIdentifier")
    assert await acme_provider.ca.list() == []


async def test_upper_case_csr_name_gets_the_lower_case_certificate(client, http01):
    url, order = await new_order(client, "app.test")
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    r = await client.post(order["finalize"], {"csr": b64encode(csr_with(D("APP.Test")))})
    assert r.status_code == 200, r.text
    cert = x509.load_pem_x509_certificates(
        (await client.post(r.json()["certificate"])).content)[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.test"]


async def test_csr_signed_with_the_account_key_is_refused(client, http01):
    url, order = await new_order(client, "app.test")
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    account_key = serialization.load_pem_private_key(client.key.as_pem(private=True), None)
    r = await client.post(order["finalize"], {"csr": b64encode(
        csr_with(D("app.test"), key=account_key))})
    assert (r.status_code, problem_type(r)) == (400, "badCSR")


@pytest.mark.parametrize("ident", [
    {"type": "dns", "value": "*.test"}, {"type": "dns", "value": "*.*.app.test"},
    {"type": "dns", "value": "a.*.app.test"}, {"type": "dns", "value": "evil.example.com"},
    {"type": "ip", "value": "169.254.169.254"}, {"type": "ip", "value": "::ffff:127.0.0.1"},
    {"type": "dns", "value": "b\u00fccher.test"}, {"type": "dns", "value": "app.test\x00.evil"},
    {"type": "dns", "value": "-app.test"}, {"type": "dns", "value": "a" * 300 + ".test"},
], ids=["wildcard-tld", "double-wildcard", "inner-wildcard", "outside-policy",
        "metadata-ip", "mapped-loopback", "unicode", "nul", "leading-hyphen", "too-long"])
async def test_identifiers_outside_policy_or_grammar(client, ident):
    r = await client.post("/acme/new-order", {"identifiers": [ident]})
    assert r.status_code in (400, 403), r.text
    assert problem_type(r) in ("malformed", "rejectedIdentifier", "unsupportedIdentifier")


# --- oversized and nested input -------------------------------------------------------------

async def test_deeply_nested_payload_is_malformed_not_a_500(client):
    nonce = await client.nonce()
    header = {"alg": "ES256", "kid": client.kid, "url": ISSUER + "/acme/new-order",
              "nonce": nonce}
    payload = b"[" * 40000 + b"]" * 0
    protected = b64encode(json.dumps(header).encode())
    body = b64encode(payload)
    from joserfc.jws import JWSRegistry
    sig = JWSRegistry.algorithms["ES256"].sign(f"{protected}.{body}".encode(), client.key)
    r = await client.send(ISSUER + "/acme/new-order", {
        "protected": protected, "payload": body, "signature": b64encode(sig)})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_deeply_nested_protected_header_is_malformed_not_a_500(client):
    protected = base64.urlsafe_b64encode(b"{\"a\":" + b"[" * 40000).rstrip(b"=").decode()
    r = await client.send(ISSUER + "/acme/new-order", {
        "protected": protected, "payload": "", "signature": "AAAA"})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_oversized_jws_is_refused(client):
    r = await client.send(ISSUER + "/acme/new-order", b"{" + b" " * 70000 + b"}")
    assert r.status_code in (400, 413)


# --- the validator as an SSRF probe ---------------------------------------------------------

class Listener:
    """A loopback HTTP server whose every answer is ``respond(writer)``; counts hits."""

    def __init__(self, respond: Any) -> None:
        self.respond = respond
        self.port = free_port()
        self.hits = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            await self.respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(getattr(self.server, "_clients", ()) or ()):
            w.close()


@pytest.fixture
async def internal() -> AsyncIterator[Listener]:
    """An 'internal' service the attacker wants the validator to reach."""
    async def secret(writer: asyncio.StreamWriter) -> None:
        body = b"internal secret"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    async with Listener(secret) as listener:
        yield listener


SLOW = free_port()
REDIRECT = free_port()
BIG = free_port()


async def _order_http01(client: AcmeClient) -> tuple[str, dict[str, Any]]:
    url, order = await new_order(client, "app.test")
    ch = await challenge_of(client, order["authorizations"][0], "http-01")
    r = await client.post(ch["url"], {})
    assert r.status_code == 200
    return url, ch


@pytest.mark.parametrize("acme_extra", [{"acme_http01_port": REDIRECT}], indirect=True,
                         ids=["redirect"])
async def test_http01_redirect_to_an_internal_service_is_not_followed(client, internal):
    async def redirect(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/admin\r\n"
                     b"Content-Length: 0\r\n\r\n" % internal.port)
        await writer.drain()
    _, done = await _order_http01_at(client, REDIRECT, redirect)
    assert done["status"] == "invalid"
    assert internal.hits == 0
    assert "internal secret" not in json.dumps(done)


async def _order_http01_at(client: AcmeClient, port: int, respond: Any
                           ) -> tuple[str, dict[str, Any]]:
    listener = Listener(respond)
    listener.port = port
    async with listener:
        url, ch = await _order_http01(client)
        done = await client.wait(url, ("ready", "invalid"))
        return url, done


@pytest.mark.parametrize("acme_extra", [{"acme_http01_port": SLOW,
                                         "acme_validation_timeout": 1.0}], indirect=True,
                         ids=["slow"])
async def test_http01_slow_drip_is_cut_at_the_validation_timeout(client):
    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n")
        await writer.drain()
        for _ in range(4000):
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(0.2)
    started = time.monotonic()
    _, done = await _order_http01_at(client, SLOW, drip)
    assert done["status"] == "invalid", done
    assert time.monotonic() - started < 8
    assert done["error"]["type"] == "urn:ietf:params:acme:error:connection"


@pytest.mark.parametrize("acme_extra", [{"acme_http01_port": BIG}], indirect=True,
                         ids=["big"])
async def test_http01_huge_answer_is_not_read_whole(client):
    async def big(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        for _ in range(2000):
            writer.write(b"x" * 65536)
            await writer.drain()
    _, done = await _order_http01_at(client, BIG, big)
    assert done["status"] == "invalid"
    assert "internal" not in json.dumps(done)
