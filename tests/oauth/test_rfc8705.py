"""RFC 8705: mutual-TLS client authentication (tls_client_auth) and certificate-bound access
tokens, with certificates from Bastion's own CA.

The app sees the client certificate the way the TLS layer hands it over, as the ASGI TLS
extension (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, leaf first); ``WithCert``
puts a real certificate there for in-process requests. The same flows over real sockets and
real handshakes are in tests/tls."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from bastion.app import build_app
from bastion.identity.users import IdentityError
from bastion.oauth.provider import Provider
from bastion.tokens.binding import thumbprint
from tests.conftest import ISSUER
from tests.flows import add_client

pytestmark = pytest.mark.anyio
SPIFFE = "spiffe://bastion.internal/ns/prod/sa/orders"


class WithCert:
    """The TLS layer's output for a connection that presented ``chain`` (PEM list)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.chain: list[str] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.chain is not None:
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": {
                "client_cert_chain": list(self.chain), "tls_version": 0x0304}}}
        await self.app(scope, receive, send)


@pytest.fixture
async def mtls(provider: Provider):
    wrapped = WithCert(build_app(provider))
    transport = httpx.ASGITransport(app=wrapped, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        client.tls = wrapped  # type: ignore[attr-defined]
        yield client


async def workload(provider: Provider, spiffe: str = SPIFFE) -> list[str]:
    issued = await provider.ca.issue(profile="workload", spiffe_id=spiffe, requester="test")
    return [c.public_bytes(serialization.Encoding.PEM).decode()
            for c in (issued.certificate, *issued.chain)]


def x5t(chain: list[str]) -> str:
    from cryptography import x509

    der = x509.load_pem_x509_certificate(chain[0].encode()).public_bytes(
        serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def claims(token: str) -> dict[str, Any]:
    import json

    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def mtls_client(provider: Provider, **meta: str) -> str:
    c = await add_client(provider, redirect_uris=[], grant_types=["client_credentials"],
                         scopes=["order:view"], auth_method="tls_client_auth",
                         tls_client_auth=meta or {"san_uri": SPIFFE}, roles=["order:view"])
    return c.client_id


CC = {"grant_type": "client_credentials", "scope": "order:view"}


async def test_tls_client_auth_issues_a_bound_token_the_api_accepts_only_with_the_cert(
        provider: Provider, mtls: httpx.AsyncClient):
    cid = await mtls_client(provider)
    chain = await workload(provider)
    mtls.tls.chain = chain
    r = await mtls.post("/token", data={**CC, "client_id": cid})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert claims(token)["cnf"] == {"x5t#S256": x5t(chain)}
    # the bound token works over the same certificate...
    assert (await mtls.get("/orders", headers={"Authorization": f"Bearer {token}"})
            ).status_code == 200
    # ...and nowhere else: no certificate, or another one (a stolen token)
    mtls.tls.chain = None
    r = await mtls.get("/orders", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    mtls.tls.chain = await workload(provider, SPIFFE)  # same identity, another key
    r = await mtls.get("/orders", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    # introspection says what it is bound to (RFC 8705 §3.2)
    sec = await add_client(provider, redirect_uris=[], grant_types=["client_credentials"])
    mtls.tls.chain = None
    r = await mtls.post("/introspect", data={"token": token}, auth=(sec.client_id, sec.secret))
    assert r.json()["cnf"] == {"x5t#S256": x5t(chain)}


@pytest.mark.parametrize("case", ["no-cert", "other-spiffe", "revoked", "client-secret",
                                  "no-client-id"])
async def test_tls_client_auth_refusals(provider: Provider, mtls: httpx.AsyncClient, case):
    cid = await mtls_client(provider)
    data = {**CC, "client_id": cid}
    if case == "other-spiffe":
        mtls.tls.chain = await workload(provider, "spiffe://bastion.internal/ns/prod/sa/evil")
    elif case == "revoked":
        chain = await workload(provider)
        from cryptography import x509

        await provider.ca.revoke(x509.load_pem_x509_certificate(
            chain[0].encode()).serial_number, "keyCompromise", "test")
        mtls.tls.chain = chain
    elif case == "client-secret":
        mtls.tls.chain = await workload(provider)
        data["client_secret"] = "guess"  # a tls_client_auth client has no secret
    elif case == "no-client-id":
        mtls.tls.chain = await workload(provider)
        data.pop("client_id")
    r = await mtls.post("/token", data=data)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    assert "access_token" not in r.text


async def test_other_client_auth_over_mtls_also_binds(provider: Provider,
                                                      mtls: httpx.AsyncClient):
    sec = await add_client(provider, redirect_uris=[], grant_types=["client_credentials"],
                           scopes=["order:view"], roles=["order:view"])
    plain = await mtls.post("/token", data=CC, auth=(sec.client_id, sec.secret))
    assert "cnf" not in claims(plain.json()["access_token"])
    mtls.tls.chain = await workload(provider, "spiffe://bastion.internal/ns/x/sa/y")
    bound = await mtls.post("/token", data=CC, auth=(sec.client_id, sec.secret))
    assert claims(bound.json()["access_token"])["cnf"]["x5t#S256"] == x5t(mtls.tls.chain)
    # an unbound token still works with or without a certificate
    r = await mtls.get("/orders", headers={
        "Authorization": f"Bearer {plain.json()['access_token']}"})
    assert r.status_code == 200


@pytest.mark.parametrize(("meta", "spiffe", "ok"), [
    ({"san_dns": "Orders.Internal"}, None, True),
    ({"san_ip": "127.0.0.1"}, None, True),
    ({"subject_dn": "CN=orders.internal"}, None, True),
    ({"san_dns": "billing.internal"}, None, False),
])
async def test_the_other_name_kinds(provider: Provider, mtls: httpx.AsyncClient, meta, spiffe,
                                    ok):
    cid = await mtls_client(provider, **meta)
    issued = await provider.ca.issue(profile="client", dns_names=["orders.internal"],
                                     ip_addresses=["127.0.0.1"], requester="t")
    mtls.tls.chain = [issued.pem()]
    r = await mtls.post("/token", data={**CC, "client_id": cid})
    assert (r.status_code == 200) is ok, r.text


@pytest.mark.parametrize("meta", [None, {}, {"san_uri": SPIFFE, "san_dns": "a.test"},
                                  {"san_other": "x"}, {"subject_dn": "not a dn=="},
                                  {"san_ip": "999.1.1.1"}, {"san_uri": "relative/path"},
                                  {"san_dns": "bad\x00name"}])
async def test_registration_refuses_bad_metadata(provider: Provider, meta):
    with pytest.raises(IdentityError):
        await add_client(provider, redirect_uris=[], grant_types=["client_credentials"],
                         auth_method="tls_client_auth", tls_client_auth=meta)
    with pytest.raises(IdentityError):  # the metadata only with the method
        await add_client(provider, redirect_uris=[], grant_types=["client_credentials"],
                         tls_client_auth={"san_uri": SPIFFE})


async def test_a_garbage_certificate_in_the_scope_is_no_certificate(
        provider: Provider, mtls: httpx.AsyncClient):
    cid = await mtls_client(provider)
    mtls.tls.chain = ["-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"]
    r = await mtls.post("/token", data={**CC, "client_id": cid})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_discovery_advertises_mtls(mtls: httpx.AsyncClient):
    meta = (await mtls.get("/.well-known/oauth-authorization-server")).json()
    assert "tls_client_auth" in meta["token_endpoint_auth_methods_supported"]
    assert meta["tls_client_certificate_bound_access_tokens"] is True
    assert thumbprint(b"x") == base64.urlsafe_b64encode(
        hashlib.sha256(b"x").digest()).rstrip(b"=").decode()
