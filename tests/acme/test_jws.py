"""RFC 8555 §6.2-§6.5: malformed or replayed JWS objects get problem documents."""

from __future__ import annotations

import json

import httpx
import pytest
from joserfc.jwk import ECKey, OctKey, RSAKey

from bastion.acme.jws import b64encode
from tests.acme.conftest import SQLITE_ONLY, AcmeClient, problem_type
from tests.conftest import ISSUER

pytestmark = [pytest.mark.anyio, SQLITE_ONLY]
NEW_ORDER = ISSUER + "/acme/new-order"
ORDER = {"identifiers": [{"type": "dns", "value": "app.test"}]}



async def test_directory_and_nonce(acme_http: httpx.AsyncClient) -> None:
    d = (await acme_http.get("/acme/directory")).json()
    assert d["newNonce"] == ISSUER + "/acme/new-nonce"
    assert d["renewalInfo"] == ISSUER + "/acme/renewal-info"
    assert d["meta"]["externalAccountRequired"] is False
    head = await acme_http.head("/acme/new-nonce")
    get = await acme_http.get("/acme/new-nonce")
    assert (head.status_code, get.status_code) == (200, 204)
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]
    assert head.headers["Cache-Control"] == "no-store"


async def test_replayed_jws_is_bad_nonce(client: AcmeClient) -> None:
    body = client.sign(NEW_ORDER, ORDER, await client.nonce())
    first = await client.send(NEW_ORDER, body)
    assert first.status_code == 201, first.text
    again = await client.send(NEW_ORDER, body)
    assert (again.status_code, problem_type(again)) == (400, "badNonce")
    # the problem carries a fresh nonce that works
    retry = await client.post(NEW_ORDER, ORDER, nonce=again.headers["Replay-Nonce"])
    assert retry.status_code == 201, retry.text


@pytest.mark.parametrize("nonce", ["made-up-nonce-value-123", "!!", None],
                         ids=["unknown", "not-base64url", "missing"])
async def test_bad_nonce(client: AcmeClient, nonce: str | None) -> None:
    r = await client.send(NEW_ORDER, client.sign(NEW_ORDER, ORDER, nonce))
    assert (r.status_code, problem_type(r)) == (400, "badNonce")


async def test_wrong_url_is_unauthorized(client: AcmeClient) -> None:
    body = client.sign(ISSUER + "/acme/new-account", ORDER, await client.nonce())
    r = await client.send(NEW_ORDER, body)
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")


async def test_alg_none_is_refused(client: AcmeClient) -> None:
    header = {"alg": "none", "nonce": await client.nonce(), "url": NEW_ORDER,
              "kid": client.kid}
    body = {"protected": b64encode(json.dumps(header).encode()),
            "payload": b64encode(json.dumps(ORDER).encode()), "signature": ""}
    r = await client.send(NEW_ORDER, body)
    assert (r.status_code, problem_type(r)) == (400, "badSignatureAlgorithm")


async def test_hmac_alg_is_refused(client: AcmeClient) -> None:
    key = OctKey.generate_key(256)
    from joserfc import jws

    from tests.acme.conftest import REGISTRY
    header = {"alg": "HS256", "nonce": await client.nonce(), "url": NEW_ORDER,
              "kid": client.kid}
    body = jws.serialize_json({"protected": header}, json.dumps(ORDER), key,
                              algorithms=["HS256"], registry=REGISTRY)
    r = await client.send(NEW_ORDER, dict(body))
    assert (r.status_code, problem_type(r)) == (400, "badSignatureAlgorithm")


async def test_bad_signature(client: AcmeClient) -> None:
    body = client.sign(NEW_ORDER, ORDER, await client.nonce())
    other = client.sign(NEW_ORDER, {"identifiers": []}, await client.nonce())
    body["payload"] = other["payload"]  # a payload the signature does not cover
    r = await client.send(NEW_ORDER, body)
    assert (r.status_code, problem_type(r)) == (400, "malformed")
    assert r.json()["detail"] == "JWS verification error"


async def test_signed_by_another_key_than_the_kid(client: AcmeClient) -> None:
    r = await client.post(NEW_ORDER, ORDER, key=ECKey.generate_key("P-256"))
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_unknown_kid(client: AcmeClient) -> None:
    r = await client.post(NEW_ORDER, ORDER, kid=ISSUER + "/acme/acct/nosuchaccount")
    assert (r.status_code, problem_type(r)) == (400, "accountDoesNotExist")


async def test_other_accounts_kid(acme_http: httpx.AsyncClient, client: AcmeClient) -> None:
    other = AcmeClient(acme_http)
    assert (await other.register()).status_code == 201
    # the other account's kid, signed with this client's key
    r = await client.post(NEW_ORDER, ORDER, kid=other.kid)
    assert (r.status_code, problem_type(r)) == (400, "malformed")
    # and an account URL that is not the signer's
    r = await client.post(str(other.kid))
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")


async def test_jwk_and_kid_together(client: AcmeClient) -> None:
    r = await client.post(NEW_ORDER, ORDER, extra={"jwk": client.key.as_dict(private=False)})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_jwk_where_kid_is_required(client: AcmeClient) -> None:
    r = await client.post(NEW_ORDER, ORDER, jwk=True)
    assert (r.status_code, problem_type(r)) == (400, "malformed")


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"protected":"e30","payload":""}',
                                 b'{"protected":"%%%","payload":"","signature":""}',
                                 b'{"protected":"e30","payload":"","signature":"",'
                                 b'"header":{}}'],
                         ids=["not-json", "not-object", "no-signature", "bad-base64",
                              "unprotected-header"])
async def test_malformed_jws(client: AcmeClient, raw: bytes) -> None:
    r = await client.send(NEW_ORDER, raw)
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_wrong_content_type(client: AcmeClient) -> None:
    body = client.sign(NEW_ORDER, ORDER, await client.nonce())
    r = await client.send(NEW_ORDER, body, content_type="application/json")
    assert (r.status_code, problem_type(r)) == (415, "malformed")


async def test_small_rsa_key_is_bad_public_key(acme_http: httpx.AsyncClient) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns about 1024-bit keys
        weak = AcmeClient(acme_http, RSAKey.generate_key(1024), alg="RS256")
        r = await weak.register()
    assert (r.status_code, problem_type(r)) == (400, "badPublicKey")


async def test_private_key_in_jwk_is_bad_public_key(acme_http: httpx.AsyncClient) -> None:
    c = AcmeClient(acme_http)
    r = await c.post("/acme/new-account", {"termsOfServiceAgreed": True},
                     extra={"jwk": c.key.as_dict(private=True)})
    assert (r.status_code, problem_type(r)) == (400, "badPublicKey")


async def test_existing_account_and_only_return_existing(acme_http: httpx.AsyncClient,
                                                         client: AcmeClient) -> None:
    again = AcmeClient(acme_http, client.key)
    r = await again.register()
    assert (r.status_code, r.headers["Location"]) == (200, client.kid)
    fresh = AcmeClient(acme_http)
    r = await fresh.register(onlyReturnExisting=True)
    assert (r.status_code, problem_type(r)) == (400, "accountDoesNotExist")


async def test_deactivated_account_is_unauthorized(client: AcmeClient) -> None:
    r = await client.post(str(client.kid), {"status": "deactivated"})
    assert (r.status_code, r.json()["status"]) == (200, "deactivated")
    r = await client.post(NEW_ORDER, ORDER)
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")


@pytest.mark.parametrize("acme_extra", [{"acme": False}], indirect=True, ids=["acme-off"])
async def test_acme_off(acme_http: httpx.AsyncClient) -> None:
    assert (await acme_http.get("/acme/directory")).status_code == 404


@pytest.mark.parametrize("extra", [
    {"kid": 123}, {"kid": ["x"]}, {"url": 5}, {"nonce": 5}, {"nonce": "A" * 5000},
    {"crit": ["b64"], "b64": False}, {"kid": ISSUER + "/acme/acct/" + "x" * 4000},
], ids=["kid-int", "kid-list", "url-int", "nonce-int", "nonce-huge", "crit", "kid-huge"])
async def test_odd_header_values(client: AcmeClient, extra: dict[str, object]) -> None:
    header = {"alg": "ES256", "nonce": await client.nonce(), "url": NEW_ORDER,
              "kid": client.kid, **extra}
    r = await client.send(NEW_ORDER, client.sign_raw(header, ORDER))
    assert 400 <= r.status_code < 500, r.text
    assert problem_type(r) in ("malformed", "badNonce", "unauthorized", "accountDoesNotExist")
    assert r.json()["detail"] != "JWS verification error"  # refused for the header


async def test_sign_raw_is_a_valid_jws(client: AcmeClient) -> None:
    header = {"alg": "ES256", "nonce": await client.nonce(), "url": NEW_ORDER,
              "kid": client.kid}
    r = await client.send(NEW_ORDER, client.sign_raw(header, ORDER))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("payload", [
    {"identifiers": [{"type": "dns", "value": 5}]}, {"identifiers": [None]},
    {"identifiers": [{"type": "dns", "value": "a" * 300 + ".test"}]},
    {"identifiers": [{"type": "dns", "value": "app.test"}] * 101},
    {"identifiers": "x" * 10}, [], "string", 5,
], ids=["value-int", "null-identifier", "name-too-long", "too-many", "string-identifiers",
        "list-payload", "string-payload", "number-payload"])
async def test_odd_new_order_payloads(client: AcmeClient, payload: object) -> None:
    r = await client.post(NEW_ORDER, payload)
    assert (r.status_code, problem_type(r)) == (400, "malformed"), r.text
