"""RFC 8555 §7.3: accounts: update, key change (§7.3.5), deactivation (§7.3.6), the
orders list, and external account binding (§7.3.4) with ``bastion acme eab``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey, RSAKey

from bastion.acme.eab import create_eab_key
from bastion.acme.jws import b64encode
from bastion.oauth.provider import Provider
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

pytestmark = pytest.mark.anyio
KEY_CHANGE = ISSUER + "/acme/key-change"
NEW_ACCOUNT = ISSUER + "/acme/new-account"


def inner_key_change(client: AcmeClient, new: Any, *, account: str | None = None,
                     old: Any = None, url: str = KEY_CHANGE) -> dict[str, str]:
    payload = {"account": account or client.kid,
               "oldKey": (old or client.key).as_dict(private=False)}
    return client.sign(url, payload, None, key=new, jwk=True,
                       alg="RS256" if isinstance(new, RSAKey) else "ES256")


@SQLITE_ONLY
async def test_update_contact_and_orders_list(client: AcmeClient) -> None:
    r = await client.post(str(client.kid), {"contact": ["mailto:ops@app.test"]})
    assert (r.status_code, r.json()["contact"]) == (200, ["mailto:ops@app.test"])
    r = await client.post(str(client.kid), {"contact": ["tel:+15555555"]})
    assert (r.status_code, problem_type(r)) == (400, "malformed")
    url, _ = await new_order(client, "app.test")
    acct = (await client.post(str(client.kid))).json()
    r = await client.post(acct["orders"])
    assert r.json()["orders"] == [url]


async def test_key_change(acme_http: httpx.AsyncClient, client: AcmeClient) -> None:
    new = ECKey.generate_key("P-256")
    r = await client.post(KEY_CHANGE, inner_key_change(client, new))
    assert r.status_code == 200, r.text
    old_key, client.key = client.key, new
    assert (await client.post(str(client.kid))).status_code == 200  # the new key works
    stale = AcmeClient(acme_http, old_key)
    stale.kid = client.kid
    r = await stale.post(str(client.kid))
    assert (r.status_code, problem_type(r)) == (400, "malformed")  # the old one does not
    # newAccount with the new key finds the same account
    again = AcmeClient(acme_http, new)
    assert (await again.register(onlyReturnExisting=True)).headers["Location"] == client.kid


@SQLITE_ONLY
async def test_key_change_to_another_accounts_key(acme_http: httpx.AsyncClient,
                                                  client: AcmeClient) -> None:
    other = AcmeClient(acme_http)
    assert (await other.register()).status_code == 201
    r = await client.post(KEY_CHANGE, inner_key_change(client, other.key))
    assert (r.status_code, problem_type(r)) == (409, "malformed")  # §7.3.5
    assert r.headers["Location"] == other.kid


@SQLITE_ONLY
@pytest.mark.parametrize("fault", ["wrong-old-key", "wrong-account", "wrong-url",
                                   "inner-by-other-key"])
async def test_key_change_refused(client: AcmeClient, fault: str) -> None:
    new = ECKey.generate_key("P-256")
    if fault == "wrong-old-key":
        inner = inner_key_change(client, new, old=ECKey.generate_key("P-256"))
    elif fault == "wrong-account":
        inner = inner_key_change(client, new, account=ISSUER + "/acme/acct/someone")
    elif fault == "wrong-url":
        inner = inner_key_change(client, new, url=NEW_ACCOUNT)
    else:
        inner = inner_key_change(client, new)
        other = inner_key_change(client, ECKey.generate_key("P-256"))
        inner["signature"] = other["signature"]
    r = await client.post(KEY_CHANGE, inner)
    assert r.status_code in (400, 403), r.text
    assert problem_type(r) in ("malformed", "unauthorized")
    assert (await client.post(str(client.kid))).status_code == 200  # the key is unchanged


async def test_account_deactivation(acme_http: httpx.AsyncClient, client: AcmeClient) -> None:
    r = await client.post(str(client.kid), {"status": "revoked"})
    assert (r.status_code, problem_type(r)) == (400, "malformed")  # only "deactivated"
    r = await client.post(str(client.kid), {"status": "deactivated"})
    assert (r.status_code, r.json()["status"]) == (200, "deactivated")
    r = await client.post(str(client.kid))
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")
    # §7.3.6: the key is not accepted again, not even to find the account
    again = AcmeClient(acme_http, client.key)
    r = await again.register()
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")


def eab_binding(client: AcmeClient, kid: str, hmac_key: str,
                url: str = NEW_ACCOUNT) -> dict[str, str]:
    mac = OctKey.import_key({"kty": "oct", "k": hmac_key})  # base64url, as certbot takes it
    header = {"alg": "HS256", "kid": kid, "url": url}
    payload = json.dumps(client.key.as_dict(private=False)).encode()
    return dict(jws.serialize_json({"protected": header}, payload, mac,
                                   algorithms=["HS256"], registry=REGISTRY))


@pytest.mark.parametrize("acme_extra", [{"acme_eab_required": True}], indirect=True,
                         ids=["eab-required"])
async def test_eab_required(acme_provider: Provider, acme_http: httpx.AsyncClient) -> None:
    d = (await acme_http.get("/acme/directory")).json()
    assert d["meta"]["externalAccountRequired"] is True
    c = AcmeClient(acme_http)
    r = await c.register()
    assert (r.status_code, problem_type(r)) == (403, "externalAccountRequired")
    key = await create_eab_key(acme_provider)
    r = await c.register(externalAccountBinding=eab_binding(c, key.kid, key.hmac_key))
    assert r.status_code == 201, r.text
    assert (await new_order(c, "app.test"))[1]["status"] == "pending"


async def test_eab(acme_provider: Provider, acme_http: httpx.AsyncClient) -> None:
    key = await create_eab_key(acme_provider)
    c = AcmeClient(acme_http)
    r = await c.register(externalAccountBinding=eab_binding(c, key.kid, key.hmac_key))
    assert r.status_code == 201, r.text
    # one key, one account
    d = AcmeClient(acme_http)
    r = await d.register(externalAccountBinding=eab_binding(d, key.kid, key.hmac_key))
    assert (r.status_code, problem_type(r)) == (403, "unauthorized")
    assert r.json()["detail"] == "the external account key has been used"


@SQLITE_ONLY
@pytest.mark.parametrize("fault", ["unknown-kid", "wrong-mac", "other-jwk", "wrong-url"])
async def test_eab_refused(acme_provider: Provider, acme_http: httpx.AsyncClient,
                           fault: str) -> None:
    key = await create_eab_key(acme_provider)
    c = AcmeClient(acme_http)
    if fault == "unknown-kid":
        binding = eab_binding(c, "eab-nosuchkey", key.hmac_key)
    elif fault == "wrong-mac":
        binding = eab_binding(c, key.kid, OctKey.generate_key(256).as_dict()["k"])
    elif fault == "other-jwk":
        binding = eab_binding(AcmeClient(acme_http), key.kid, key.hmac_key)
    else:
        binding = eab_binding(c, key.kid, key.hmac_key, url=ISSUER + "/acme/new-order")
    r = await c.register(externalAccountBinding=binding)
    assert r.status_code in (400, 403), r.text
    assert problem_type(r) in ("malformed", "unauthorized")


async def test_eab_policy_limits_identifiers(acme_provider: Provider,
                                             acme_http: httpx.AsyncClient) -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["acme:NewOrder", "acme:Finalize"],
        "Resource": "arn:bastion:acme:::identifier/*.team.test"}]})
    key = await create_eab_key(acme_provider, policy=policy)
    c = AcmeClient(acme_http)
    r = await c.register(externalAccountBinding=eab_binding(c, key.kid, key.hmac_key))
    assert r.status_code == 201, r.text
    assert (await new_order(c, "api.team.test"))[1]["status"] == "pending"
    r = await c.post("/acme/new-order", {"identifiers": [{"type": "dns",
                                                          "value": "app.test"}]})
    assert (r.status_code, problem_type(r)) == (403, "rejectedIdentifier")


@SQLITE_ONLY
async def test_bad_eab_policy_is_refused(acme_provider: Provider) -> None:
    with pytest.raises(ValueError):
        await create_eab_key(acme_provider, policy='{"Statement": "nope"}')


@SQLITE_ONLY
async def test_policy_without_finalize(acme_provider: Provider, acme_http: httpx.AsyncClient,
                                       http01: HttpResponder) -> None:
    """acme:NewOrder without acme:Finalize: the order is made and validated, never issued."""
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "acme:NewOrder",
        "Resource": "arn:bastion:acme:::identifier/app.test"}]})
    key = await create_eab_key(acme_provider, policy=policy)
    c = AcmeClient(acme_http)
    assert (await c.register(externalAccountBinding=eab_binding(
        c, key.kid, key.hmac_key))).status_code == 201
    url, order = await new_order(c, "app.test")
    assert (await authorize_http01(c, http01, order, url))["status"] == "ready"
    csr, _ = make_csr("app.test")
    r = await c.post(order["finalize"], {"csr": b64encode(csr)})
    assert (r.status_code, problem_type(r)) == (403, "rejectedIdentifier")
