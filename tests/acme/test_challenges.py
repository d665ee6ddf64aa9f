"""RFC 8555 §8.3/§8.4 and RFC 8737: challenges validated against real responders on loopback
(an HTTP server, a UDP DNS server at ``acme_dns_resolver``, a TLS server with ALPN
acme-tls/1), and what happens when the response is wrong or the port is closed."""

from __future__ import annotations

import hashlib

import pytest

from tests.acme.conftest import (
    SQLITE_ONLY,
    AcmeClient,
    DnsResponder,
    HttpResponder,
    TlsAlpnResponder,
    authorize_http01,
    b64,
    challenge_of,
    new_order,
    problem_type,
)
from tests.live import free_port

pytestmark = pytest.mark.anyio


def dns_value(client: AcmeClient, token: str) -> str:
    return b64(hashlib.sha256(client.key_authorization(token).encode()).digest())


async def test_http01(client: AcmeClient, http01: HttpResponder) -> None:
    url, order = await new_order(client, "app.test", "www.app.test")
    assert order["status"] == "pending" and len(order["authorizations"]) == 2
    done = await authorize_http01(client, http01, order, url)
    assert done["status"] == "ready"
    for authz_url in order["authorizations"]:
        z = (await client.post(authz_url)).json()
        assert z["status"] == "valid"
        assert [c["type"] for c in z["challenges"]] == ["http-01"]
        assert z["challenges"][0]["status"] == "valid" and "validated" in z["challenges"][0]


async def test_http01_wrong_response_invalidates_the_order(
        client: AcmeClient, http01: HttpResponder) -> None:
    url, order = await new_order(client, "app.test")
    ch = await challenge_of(client, order["authorizations"][0], "http-01")
    http01.tokens[ch["token"]] = ch["token"] + ".not-the-thumbprint"
    assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    assert done["status"] == "invalid"
    assert done["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"
    assert done["error"]["identifier"] == {"type": "dns", "value": "app.test"}
    z = (await client.post(order["authorizations"][0])).json()
    assert z["status"] == "invalid"
    # a failed challenge stays failed: answering again does not revive it
    r = await client.post(ch["url"], {})
    assert (r.status_code, r.json()["status"]) == (200, "invalid")


@SQLITE_ONLY
async def test_http01_missing_token_is_unauthorized(client: AcmeClient,
                                                    http01: HttpResponder) -> None:
    url, order = await new_order(client, "app.test")
    ch = await challenge_of(client, order["authorizations"][0], "http-01")
    assert (await client.post(ch["url"], {})).status_code == 200  # responder answers 404
    done = await client.wait(url, ("ready", "invalid"))
    assert done["error"]["type"] == "urn:ietf:params:acme:error:unauthorized"


async def test_dns01(client: AcmeClient, dns01: DnsResponder) -> None:
    url, order = await new_order(client, "app.test", "*.app.test")
    tokens = []
    for authz_url in order["authorizations"]:
        ch = await challenge_of(client, authz_url, "dns-01")
        tokens.append(ch["token"])
    # both authorizations (app.test and *.app.test) read _acme-challenge.app.test
    dns01.records["_acme-challenge.app.test"] = [dns_value(client, t) for t in tokens]
    for authz_url in order["authorizations"]:
        ch = await challenge_of(client, authz_url, "dns-01")
        assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    assert done["status"] == "ready", done
    wild = [(await client.post(u)).json() for u in order["authorizations"]]
    assert sorted(z.get("wildcard", False) for z in wild) == [False, True]
    assert {z["identifier"]["value"] for z in wild} == {"app.test"}


@SQLITE_ONLY
@pytest.mark.parametrize("records", [{}, {"_acme-challenge.app.test": ["wrong-value"]}],
                         ids=["no-txt", "wrong-txt"])
async def test_dns01_wrong(client: AcmeClient, dns01: DnsResponder,
                           records: dict[str, list[str]]) -> None:
    dns01.records.update(records)
    url, order = await new_order(client, "app.test")
    ch = await challenge_of(client, order["authorizations"][0], "dns-01")
    assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    want = "incorrectResponse" if records else "unauthorized"
    assert done["error"]["type"] == "urn:ietf:params:acme:error:" + want


async def test_tls_alpn01(client: AcmeClient, alpn: TlsAlpnResponder) -> None:
    url, order = await new_order(client, "alpn.test")
    ch = await challenge_of(client, order["authorizations"][0], "tls-alpn-01")
    await alpn.start("alpn.test", client.key_authorization(ch["token"]))
    assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    assert done["status"] == "ready", done


@SQLITE_ONLY
async def test_tls_alpn01_wrong_digest(client: AcmeClient, alpn: TlsAlpnResponder) -> None:
    url, order = await new_order(client, "alpn.test")
    ch = await challenge_of(client, order["authorizations"][0], "tls-alpn-01")
    await alpn.start("alpn.test", "someone-elses.key-authorization")
    assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    assert done["error"]["type"] == "urn:ietf:params:acme:error:incorrectResponse"


async def test_tls_alpn01_to_a_closed_port(client: AcmeClient, alpn: TlsAlpnResponder) -> None:
    # the responder is never started: nothing listens on acme_tls_alpn01_port
    url, order = await new_order(client, "alpn.test")
    ch = await challenge_of(client, order["authorizations"][0], "tls-alpn-01")
    assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    assert done["status"] == "invalid"
    assert done["error"]["type"] == "urn:ietf:params:acme:error:connection"
    failed = await challenge_of(client, order["authorizations"][0], "tls-alpn-01")
    assert failed["status"] == "invalid"
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:connection"


@SQLITE_ONLY
@pytest.mark.parametrize("acme_extra", [{"acme_http01_port": free_port()}], indirect=True,
                         ids=["closed-port"])
async def test_http01_to_a_closed_port(client: AcmeClient) -> None:
    url, order = await new_order(client, "app.test")
    ch = await challenge_of(client, order["authorizations"][0], "http-01")
    assert (await client.post(ch["url"], {})).status_code == 200
    done = await client.wait(url, ("ready", "invalid"))
    assert done["error"]["type"] == "urn:ietf:params:acme:error:connection"


@SQLITE_ONLY
async def test_wildcard_offers_only_dns01(client: AcmeClient) -> None:
    _, order = await new_order(client, "*.app.test")
    z = (await client.post(order["authorizations"][0])).json()
    assert [c["type"] for c in z["challenges"]] == ["dns-01"]  # RFC 8555 §7.1.3
    http = z["challenges"][0]["url"].rsplit("/", 1)[0] + "/http-01"
    r = await client.post(http, {})
    assert (r.status_code, problem_type(r)) == (404, "malformed")


async def test_deactivated_authorization_invalidates_the_order(client: AcmeClient) -> None:
    url, order = await new_order(client, "app.test")
    authz_url = order["authorizations"][0]
    r = await client.post(authz_url, {"status": "deactivated"})
    assert (r.status_code, r.json()["status"]) == (200, "deactivated")  # §7.5.2
    assert (await client.post(url)).json()["status"] == "invalid"
    r = await client.post(authz_url, {"status": "deactivated"})
    assert (r.status_code, problem_type(r)) == (400, "malformed")


async def test_poll_right_after_the_challenge_response_gets_the_outcome(
        client: AcmeClient, http01: HttpResponder) -> None:
    # the validation runs in this process: one POST-as-GET after the challenge response
    # answers with its outcome (acme/base.py VALIDATION_WAIT), no polling loop
    url, order = await new_order(client, "app.test")
    authz_url = order["authorizations"][0]
    ch = await challenge_of(client, authz_url, "http-01")
    http01.tokens[ch["token"]] = client.key_authorization(ch["token"])
    r = await client.post(ch["url"], {})
    assert (r.status_code, r.json()["status"]) == (200, "processing")
    assert r.headers["Retry-After"] == "1"
    z = (await client.post(authz_url)).json()
    assert z["status"] == "valid" and z["challenges"][0]["status"] == "valid"
    assert (await client.post(url)).json()["status"] == "ready"


@SQLITE_ONLY
@pytest.mark.parametrize("poll", ["authz", "challenge", "order"])
async def test_poll_waits_for_a_failing_validation_too(
        client: AcmeClient, http01: HttpResponder, poll: str) -> None:
    url, order = await new_order(client, "app.test")
    authz_url = order["authorizations"][0]
    ch = await challenge_of(client, authz_url, "http-01")
    http01.tokens[ch["token"]] = ch["token"] + ".not-the-thumbprint"
    assert (await client.post(ch["url"], {})).status_code == 200
    target = {"authz": authz_url, "challenge": ch["url"], "order": url}[poll]
    assert (await client.post(target)).json()["status"] == "invalid"


@SQLITE_ONLY
@pytest.mark.parametrize("acme_extra", [{"acme_validation_timeout": 30.0}], indirect=True,
                         ids=["slow-validation"])
async def test_poll_wait_is_bounded(client: AcmeClient, http01: HttpResponder,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a validation that hangs: the poll answers "pending" after VALIDATION_WAIT, not later
    import asyncio
    import time

    from bastion.acme import base
    from bastion.acme.validate import Validator

    gate = asyncio.Event()

    async def hang(*_: object) -> None:
        await gate.wait()

    monkeypatch.setattr(base, "VALIDATION_WAIT", 0.2)
    monkeypatch.setattr(Validator, "validate", hang)
    url, order = await new_order(client, "app.test")
    authz_url = order["authorizations"][0]
    ch = await challenge_of(client, authz_url, "http-01")
    assert (await client.post(ch["url"], {})).status_code == 200
    t0 = time.monotonic()
    z = (await client.post(authz_url)).json()
    assert z["status"] == "pending" and z["challenges"][0]["status"] == "processing"
    assert time.monotonic() - t0 < 5
    gate.set()  # validate() returns None: valid
    assert (await client.post(authz_url)).json()["status"] == "valid"
