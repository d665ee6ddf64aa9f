"""Bad input to orders and finalization: each answer is an RFC 8555 §6.7 problem document
with the type the RFC names and a fresh Replay-Nonce, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from joserfc import jws

from bastion.acme.jws import b64encode
from tests.acme.conftest import (
    REGISTRY,
    SQLITE_ONLY,
    AcmeClient,
    HttpResponder,
    authorize_http01,
    make_csr,
    new_order,
    problem_type,
)
from tests.conftest import ISSUER

pytestmark = [pytest.mark.anyio, SQLITE_ONLY]
NEW_ORDER = ISSUER + "/acme/new-order"



@pytest.mark.parametrize(("identifiers", "status", "kind"), [
    ([{"type": "dns", "value": "example.com"}], 403, "rejectedIdentifier"),
    ([{"type": "dns", "value": "app.test"}, {"type": "dns", "value": "evil.example"}], 403,
     "rejectedIdentifier"),
    ([{"type": "dns", "value": "*.example.com"}], 403, "rejectedIdentifier"),
    ([{"type": "ip", "value": "10.1.2.3"}], 403, "rejectedIdentifier"),
    ([{"type": "email", "value": "a@b.test"}], 400, "unsupportedIdentifier"),
    ([{"type": "dns", "value": "bad_name!.test"}], 400, "malformed"),
    ([{"type": "dns", "value": "*.*.app.test"}], 400, "malformed"),
    ([{"type": "dns", "value": "*.test"}], 403, "rejectedIdentifier"),
    ([{"type": "ip", "value": "not-an-ip"}], 400, "malformed"),
    ([], 400, "malformed"),
    ("app.test", 400, "malformed"),
], ids=["outside-policy", "one-of-two-outside", "wildcard-outside", "ip-outside",
        "email-type", "bad-dns-name", "double-wildcard", "wildcard-tld", "bad-ip", "empty", "not-a-list"])
async def test_new_order_refused(client: AcmeClient, identifiers: Any, status: int,
                                 kind: str) -> None:
    r = await client.post(NEW_ORDER, {"identifiers": identifiers})
    assert (r.status_code, problem_type(r)) == (status, kind), r.text
    if kind == "rejectedIdentifier":
        assert "app.test" not in [s["identifier"]["value"]
                                  for s in r.json().get("subproblems", [])]


async def test_new_order_with_validity_is_refused(client: AcmeClient) -> None:
    r = await client.post(NEW_ORDER, {"identifiers": [{"type": "dns", "value": "app.test"}],
                                      "notAfter": "2030-01-01T00:00:00Z"})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_payload_not_json(client: AcmeClient) -> None:
    # a valid signature over a payload that is not JSON
    header = {"alg": "ES256", "nonce": await client.nonce(), "url": NEW_ORDER,
              "kid": client.kid}
    signed = jws.serialize_json({"protected": header}, b"{not json", client.key,
                                algorithms=["ES256"], registry=REGISTRY)
    r = await client.send(NEW_ORDER, dict(signed))
    assert (r.status_code, problem_type(r)) == (400, "malformed")
    assert r.json()["detail"] == "the JWS payload is not JSON"


async def test_oversized_body(client: AcmeClient) -> None:
    body = client.sign(NEW_ORDER, {"identifiers": [{"type": "dns", "value": "app.test"}],
                                   "pad": "x" * 70_000}, await client.nonce())
    r = await client.send(NEW_ORDER, body)
    assert (r.status_code, problem_type(r)) == (413, "malformed")


async def test_get_where_post_as_get_is_required(acme_http: httpx.AsyncClient,
                                                 client: AcmeClient) -> None:
    url, _ = await new_order(client, "app.test")
    r = await acme_http.get(url)
    assert (r.status_code, problem_type(r)) == (405, "malformed")
    r = await acme_http.put("/acme/directory")
    assert (r.status_code, problem_type(r)) == (405, "malformed")


async def test_someone_elses_order_is_not_found(acme_http: httpx.AsyncClient,
                                                client: AcmeClient) -> None:
    url, order = await new_order(client, "app.test")
    other = AcmeClient(acme_http)
    assert (await other.register()).status_code == 201
    for target in (url, order["authorizations"][0], order["finalize"]):
        r = await other.post(target, {} if target.endswith("finalize") else None)
        assert (r.status_code, problem_type(r)) == (404, "malformed"), target


async def test_finalize_before_ready(client: AcmeClient) -> None:
    _, order = await new_order(client, "app.test")
    csr, _ = make_csr("app.test")
    r = await client.post(order["finalize"], {"csr": b64encode(csr)})
    assert (r.status_code, problem_type(r)) == (403, "orderNotReady")


def bad_signature(der: bytes) -> bytes:
    """The CSR with the last byte of its signature changed (still parses)."""
    return der[:-1] + bytes([der[-1] ^ 0x01])


@pytest.mark.parametrize(("csr", "detail"), [
    (lambda: make_csr("app.test", "other.test")[0], "exactly the order's identifiers"),
    (lambda: make_csr("other.test")[0], "exactly the order's identifiers"),
    (lambda: make_csr("app.test", cn="other.test")[0], "exactly the order's identifiers"),
    (lambda: bad_signature(make_csr("app.test")[0]), "signature is invalid"),
    (lambda: b"not a csr", "not a DER PKCS#10"),
    (lambda: None, "not a DER PKCS#10"),
    (lambda key: make_csr("app.test", key=key)[0], "is the account key"),  # RFC 8555 §11.1
], ids=["extra-name", "other-name", "other-cn", "bad-signature", "not-der", "missing",
        "account-key"])
async def test_bad_csr(client: AcmeClient, http01: HttpResponder, csr: Any,
                       detail: str) -> None:
    url, order = await new_order(client, "app.test")
    assert (await authorize_http01(client, http01, order, url))["status"] == "ready"
    der = csr(client.key.private_key) if csr.__code__.co_argcount else csr()
    r = await client.post(order["finalize"], {"csr": b64encode(der)} if der else {})
    assert (r.status_code, problem_type(r)) == (400, "badCSR"), r.text
    assert detail in r.json()["detail"]
    # a refused CSR leaves the order ready for a good one
    assert (await client.post(url)).json()["status"] == "ready"
