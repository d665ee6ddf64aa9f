"""RFC 8555 §7.4 finalize and download, §7.6 revocation (by the account and by the
certificate's key), RFC 9773 renewal information: certificates from the real internal CA,
verified against its trust bundle."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store
from joserfc.jwk import ECKey

from bastion.acme.ari import cert_id
from bastion.acme.jws import b64encode
from bastion.oauth.provider import Provider
from tests.acme.conftest import (
    AcmeClient,
    HttpResponder,
    authorize_http01,
    make_csr,
    new_order,
    problem_type,
)
from tests.conftest import ISSUER
from tests.live import make_tls

pytestmark = pytest.mark.anyio
REVOKE = ISSUER + "/acme/revoke-cert"


async def issue(client: AcmeClient, http01: HttpResponder, *names: str,
                **order_extra: Any) -> tuple[list[x509.Certificate], Any, dict[str, Any]]:
    """Order, authorize with http-01, finalize, download: the chain, the key, the order."""
    url, order = await new_order(client, *names)
    if order_extra:
        r = await client.post("/acme/new-order", {"identifiers": order["identifiers"],
                                                  **order_extra})
        assert r.status_code == 201, r.text
        url, order = r.headers["Location"], r.json()
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    csr, key = make_csr(*names)
    r = await client.post(order["finalize"], {"csr": b64encode(csr)})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "valid" and done["certificate"].startswith(ISSUER + "/acme/cert/")
    r = await client.post(done["certificate"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pem-certificate-chain"
    return x509.load_pem_x509_certificates(r.content), key, done


def verify(provider_bundle: str, chain: list[x509.Certificate], name: str) -> None:
    store = Store(x509.load_pem_x509_certificates(provider_bundle.encode()))
    verifier = PolicyBuilder().store(store).time(dt.datetime.now(dt.UTC)) \
        .build_server_verifier(x509.DNSName(name))
    verifier.verify(chain[0], chain[1:])


async def test_issue_download_verify(acme_provider: Provider, client: AcmeClient,
                                     http01: HttpResponder) -> None:
    chain, key, _ = await issue(client, http01, "app.test", "www.app.test")
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["app.test", "www.app.test"]
    assert leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        key.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = await acme_provider.ca.trust_bundle_pem()
    verify(bundle, chain, "app.test")
    verify(bundle, chain, "www.app.test")
    assert await acme_provider.ca.status(leaf.serial_number) == "good"
    # each step is in the audit trail, in the transaction that made it
    rows = await acme_provider.fast.all("SELECT event_name FROM audit_events")
    names = {r[0] for r in rows}
    assert {"CreateAcmeAccount", "CreateAcmeOrder", "ValidateAcmeChallenge",
            "FinalizeAcmeOrder", "IssueCertificate"} <= names


async def test_finalize_twice_is_order_not_ready(client: AcmeClient,
                                                 http01: HttpResponder) -> None:
    _, _, done = await issue(client, http01, "app.test")
    csr, _ = make_csr("app.test")
    r = await client.post(done["finalize"], {"csr": b64encode(csr)})
    assert (r.status_code, problem_type(r)) == (403, "orderNotReady")


async def test_renewal_info_and_replaces(acme_http: httpx.AsyncClient, client: AcmeClient,
                                         http01: HttpResponder) -> None:
    chain, _, _ = await issue(client, http01, "app.test")
    leaf = chain[0]
    cid = cert_id(leaf)
    r = await acme_http.get(f"/acme/renewal-info/{cid}")  # RFC 9773 §4: GET, no JWS
    assert r.status_code == 200, r.text
    assert "Retry-After" in r.headers
    window = r.json()["suggestedWindow"]
    start = dt.datetime.fromisoformat(window["start"])
    end = dt.datetime.fromisoformat(window["end"])
    assert leaf.not_valid_before_utc < start < end < leaf.not_valid_after_utc
    r = await acme_http.get("/acme/renewal-info/AAAA.AAAA")
    assert (r.status_code, problem_type(r)) == (404, "malformed")
    # the renewal names the certificate it replaces (RFC 9773 §5)
    renewed, _, done = await issue(client, http01, "app.test", replaces=cid)
    assert done["replaces"] == cid and renewed[0].serial_number != leaf.serial_number
    r = await client.post("/acme/new-order", {"identifiers": [{"type": "dns",
                                                               "value": "app.test"}],
                                              "replaces": "AAAA.AAAA"})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_revoke_by_account(acme_provider: Provider, acme_http: httpx.AsyncClient,
                                 client: AcmeClient, http01: HttpResponder) -> None:
    chain, _, _ = await issue(client, http01, "app.test")
    der = b64encode(chain[0].public_bytes(serialization.Encoding.DER))
    # someone else's account may not revoke it
    other = AcmeClient(acme_http)
    assert (await other.register()).status_code == 201
    r = await other.post(REVOKE, {"certificate": der})
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")
    r = await client.post(REVOKE, {"certificate": der, "reason": 2})  # cACompromise
    assert (r.status_code, problem_type(r)) == (400, "badRevocationReason")
    r = await client.post(REVOKE, {"certificate": der, "reason": 4})
    assert r.status_code == 200, r.text
    assert await acme_provider.ca.status(chain[0].serial_number) == "revoked"
    r = await client.post(REVOKE, {"certificate": der})
    assert (r.status_code, problem_type(r)) == (400, "alreadyRevoked")
    # ARI: a revoked certificate is to be renewed now
    r = await acme_http.get(f"/acme/renewal-info/{cert_id(chain[0])}")
    start = dt.datetime.fromisoformat(r.json()["suggestedWindow"]["start"])
    assert start <= dt.datetime.now(dt.UTC)


async def test_revoke_by_certificate_key(acme_provider: Provider, acme_http: httpx.AsyncClient,
                                         client: AcmeClient, http01: HttpResponder) -> None:
    chain, key, _ = await issue(client, http01, "app.test")
    der = b64encode(chain[0].public_bytes(serialization.Encoding.DER))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    holder = AcmeClient(acme_http, ECKey.import_key(pem))  # no account: jwk
    # a key that is neither the account's nor the certificate's
    stranger = AcmeClient(acme_http)
    r = await stranger.post(REVOKE, {"certificate": der}, jwk=True)
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")
    r = await holder.post(REVOKE, {"certificate": der, "reason": 1}, jwk=True)
    assert r.status_code == 200, r.text
    assert await acme_provider.ca.status(chain[0].serial_number) == "revoked"


async def test_revoke_a_certificate_not_issued_here(client: AcmeClient,
                                                    tmp_path: Path) -> None:
    _, foreign, _ = make_tls(tmp_path)  # a certificate from another CA
    cert = x509.load_pem_x509_certificate(foreign.read_bytes())
    der = b64encode(cert.public_bytes(serialization.Encoding.DER))
    r = await client.post(REVOKE, {"certificate": der})
    assert (r.status_code, problem_type(r)) == (404, "malformed")
    r = await client.post(REVOKE, {"certificate": "bm90IGEgY2VydA"})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_ip_identifier(acme_provider: Provider, client: AcmeClient,
                             http01: HttpResponder) -> None:
    """RFC 8738: an IP address, validated with http-01 at the address itself."""
    r = await client.post("/acme/new-order", {"identifiers": [{"type": "ip",
                                                               "value": "127.0.0.1"}]})
    assert r.status_code == 201, r.text
    url, order = r.headers["Location"], r.json()
    z = (await client.post(order["authorizations"][0])).json()
    assert sorted(c["type"] for c in z["challenges"]) == ["http-01", "tls-alpn-01"]
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
           .sign(key, hashes.SHA256()))
    r = await client.post(order["finalize"], {"csr": b64encode(
        csr.public_bytes(serialization.Encoding.DER))})
    assert r.status_code == 200, r.text
    pem = (await client.post(r.json()["certificate"])).content
    leaf = x509.load_pem_x509_certificates(pem)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == []
