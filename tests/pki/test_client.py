"""``bastion.pki.client``: a workload identity from the CA in an httpx transport, against a
real server that requires mutual TLS (the demo inventory, served by ``TlsServing`` under
uvicorn on the test's loop): real sockets, real TLS, certificates from the real CA; and
the HTTP/CSR path against a real ``bastion serve``."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from bastion.config import Settings
from bastion.demo_inventory import InventoryServer, orders_spiffe_id
from bastion.edge.tls import verified_client
from bastion.pki.client import CaIssuer, HttpIssuer, IssuanceError, WorkloadIdentity
from tests.conftest import sqlite_copy
from tests.live import LiveServer, free_port

pytestmark = pytest.mark.anyio
TD = "bastion.internal"
ORDERS = orders_spiffe_id(TD)


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path)


class Seen:
    """Records the serial of each request's verified client certificate."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.serials: list[str | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            cert = verified_client(scope)
            self.serials.append(cert.serial if cert else None)
        await self.app(scope, receive, send)


@pytest.fixture
async def inventory(provider: Any, settings: Settings) -> AsyncIterator[tuple[InventoryServer,
                                                                            Seen]]:
    inv = InventoryServer(settings, provider, free_port())
    seen = Seen(inv.tls.app)
    inv.tls.app = seen
    await inv.start()
    try:
        yield inv, seen
    finally:
        await inv.stop()


def identity(provider: Any, spiffe_id: str = ORDERS, **kw: Any) -> WorkloadIdentity:
    return WorkloadIdentity(spiffe_id, CaIssuer(provider.ca, requester="test:workload"), **kw)


async def test_transport_talks_to_an_mtls_required_server(provider, inventory):
    inv, seen = inventory
    async with identity(provider) as me, httpx.AsyncClient(
            base_url=inv.url, transport=me.async_transport()) as client:
        r = await client.get("/inventory/tea")
        assert r.status_code == 200, r.text
        assert r.json() == {"item": "tea", "in_stock": 100}
        assert seen.serials == [me.current.serial]
        leaf = me.current.certificate
        uris = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        assert uris == [ORDERS]
        assert await provider.ca.status(me.current.serial) == "good"
        missing = await client.get("/inventory/unobtainium")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"


async def test_the_sync_transport_shares_the_context(provider, inventory):
    inv, seen = inventory
    async with identity(provider) as me:
        def call() -> int:
            with httpx.Client(base_url=inv.url, transport=me.transport()) as client:
                return client.get("/inventory/coffee").status_code

        assert await asyncio.to_thread(call) == 200
        assert seen.serials == [me.current.serial]


async def test_forced_renewal_swaps_the_certificate_without_failing_requests(provider,
                                                                         inventory):
    inv, seen = inventory
    async with identity(provider, ttl=120) as me:
        first = me.current.serial
        assert me.current.not_after - time.time() <= 121
        async with httpx.AsyncClient(base_url=inv.url,
                                     transport=me.async_transport()) as client:
            assert (await client.get("/inventory/tea")).status_code == 200

            async def burst() -> list[int]:
                return [r.status_code for r in await asyncio.gather(
                    *(client.get("/inventory/tea") for _ in range(10)))]

            during, renewed, after = await asyncio.gather(burst(), me.renew(), burst())
            assert set(during) == {200} and set(after) == {200}
        second = renewed.serial
        assert second != first and me.current.serial == second
        # a new connection presents the new certificate
        seen.serials.clear()
        async with httpx.AsyncClient(base_url=inv.url,
                                     transport=me.async_transport()) as client:
            assert (await client.get("/inventory/tea")).status_code == 200
        assert seen.serials == [second]


async def test_background_renewal_at_its_time(provider, inventory):
    inv, seen = inventory
    # 120 s of life after a 60 s back-dated start: due at 34 % is about 1 s from now
    async with identity(provider, ttl=120, renew_at=0.34) as me:
        first = me.current.serial
        deadline = time.monotonic() + 20
        while me.current.serial == first:
            assert time.monotonic() < deadline, "not renewed in the background"
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=inv.url,
                                     transport=me.async_transport()) as client:
            assert (await client.get("/inventory/tea")).status_code == 200
        assert seen.serials[-1] == me.current.serial != first


async def test_failed_renewal_keeps_the_old_certificate_and_retries(provider, inventory):
    inv, seen = inventory
    dead = f"https://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    async with identity(provider, retry_min=0.05, retry_max=0.2) as me:
        first = me.current.serial
        good_issuer = me.issuer
        me.issuer = HttpIssuer(dead, token=lambda: "t", timeout=1)
        me.renew_soon()
        deadline = time.monotonic() + 20
        while me.failures < 2:  # retried with backoff
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert me.current.serial == first
        async with httpx.AsyncClient(base_url=inv.url,
                                     transport=me.async_transport()) as client:
            assert (await client.get("/inventory/tea")).status_code == 200
        me.issuer = good_issuer  # the CA is back: the next retry succeeds
        while me.current.serial == first:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_wrong_identity_gets_403(provider, inventory):
    inv, seen = inventory
    other = f"spiffe://{TD}/ns/demo/sa/reporting"
    async with identity(provider, other) as me, httpx.AsyncClient(
            base_url=inv.url, transport=me.async_transport()) as client:
        r = await client.get("/inventory/tea")
    assert r.status_code == 403
    assert "in_stock" not in r.text
    assert seen.serials == [me.current.serial]  # verified, then refused by SPIFFE ID


async def test_no_client_certificate_fails_the_handshake(provider, inventory):
    inv, seen = inventory
    ctx = ssl.create_default_context(cadata=await provider.ca.trust_bundle_pem())
    async with httpx.AsyncClient(base_url=inv.url, verify=ctx) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError,
                            httpx.RemoteProtocolError)):
            await client.get("/inventory/tea")
    assert seen.serials == []  # no request reached the application


async def test_a_revoked_certificate_is_refused(provider, inventory):
    inv, seen = inventory
    async with identity(provider) as me:
        await provider.ca.revoke(me.current.serial, "keyCompromise", requester="test")
        async with httpx.AsyncClient(base_url=inv.url,
                                     transport=me.async_transport()) as client:
            assert (await client.get("/inventory/tea")).status_code == 401


@pytest.mark.parametrize("spiffe_id, renew_at", [
    pytest.param("https://bastion.internal/x", 2 / 3, id="not-spiffe"),
    pytest.param(ORDERS, 0.0, id="renew-at-zero"),
    pytest.param(ORDERS, 1.0, id="renew-at-end"),
])
def test_bad_arguments(spiffe_id, renew_at):
    with pytest.raises(ValueError):
        WorkloadIdentity(spiffe_id, CaIssuer(None, requester="x"),  # type: ignore[arg-type]
                         renew_at=renew_at)


@pytest.mark.parametrize("spiffe_id, ttl", [
    pytest.param("spiffe://other.domain/ns/a/sa/b", None, id="other-trust-domain"),
    pytest.param(ORDERS, 10, id="ttl-too-short"),
    pytest.param(ORDERS, 365 * 86400, id="ttl-too-long"),
])
async def test_ca_refusals_are_issuance_errors(provider, spiffe_id, ttl):
    me = identity(provider, spiffe_id, ttl=ttl)
    with pytest.raises(IssuanceError):
        await me.start()
    assert me.current is None
    await me.aclose()


# --- over HTTP: a CSR to a real `bastion serve` ---------------------------------------------

@pytest.fixture
def live(demo_live: LiveServer) -> LiveServer:
    """``bastion serve --demo`` (tests/pki/conftest.py): its inventory (mTLS, the live CA)
    is the peer."""
    return demo_live


def client_token(live: LiveServer, name: str, tmp: Path, *, allowed: bool) -> str:
    client = live.add_client(name, [], "--grant-type", "client_credentials", "--scope",
                             "order:view")
    while client["client_id"].startswith("-"):  # the CLI would read it as an option
        client = live.add_client(name, [], "--grant-type", "client_credentials",
                                 "--scope", "order:view")
    if allowed:
        doc = tmp / f"{name}.json"
        doc.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "bastion:IssueCertificate",
            "Resource": ["arn:bastion:pki::*:certificate/*",
                         "arn:bastion:pki::*:name/*"]}]}))
        live.cli("iam", "policies", "create", f"{name}-pki", str(doc))
        live.cli("iam", "attach", "client", client["client_id"], f"{name}-pki")
    with live.http() as http:
        r = http.post("/token", data={"grant_type": "client_credentials",
                                      "scope": "order:view"},
                      auth=(client["client_id"], client["client_secret"]))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def test_http_csr_path_against_bastion_serve(live, tmp_path):
    """The certificate comes from the live server's CA over HTTP (a CSR: the key stays
    here), and works for mutual TLS with the live demo inventory."""
    token = client_token(live, "orders-workload", tmp_path, allowed=True)
    calls = 0

    async def tokens() -> str:
        nonlocal calls
        calls += 1
        return token

    issuer = HttpIssuer(live.url, token=tokens, verify=str(live.ca_file))  # a CA file
    async with WorkloadIdentity(ORDERS, issuer, ttl=600) as me, httpx.AsyncClient(
            base_url=live.env["INVENTORY_URL"], transport=me.async_transport()) as client:
        first = me.current.serial
        assert calls == 1
        assert me.current.not_after - time.time() <= 601
        r = await client.get("/inventory/tea")
        assert r.status_code == 200, r.text
        listed = {c["serial"]: c for c in live.cli("pki", "list")}
        assert first in listed  # issued by the live CA, recorded there
        renewed = await me.renew()
        assert renewed.serial != first and calls == 2
    async with httpx.AsyncClient(base_url=live.env["INVENTORY_URL"],
                                 transport=me.async_transport()) as client:
        assert (await client.get("/inventory/tea")).status_code == 200
    assert "PRIVATE" not in json.dumps(live.cli("pki", "list"))


async def test_http_csr_path_refusals(live, tmp_path):
    denied = client_token(live, "no-pki", tmp_path, allowed=False)
    for token, needle in ((denied, "403"), ("not-a-token", "401")):
        me = WorkloadIdentity(ORDERS, HttpIssuer(live.url, token=lambda t=token: t,
                                                 verify=live.ssl_context()))
        with pytest.raises(IssuanceError, match=needle):
            await me.start()
        assert me.current is None
    empty = WorkloadIdentity(ORDERS, HttpIssuer(live.url, token=lambda: "",
                                                verify=live.ssl_context()))
    with pytest.raises(IssuanceError, match="no token"):
        await empty.start()
    # Bastion's own server certificate is checked: another CA's trust fails cleanly
    wrong = WorkloadIdentity(ORDERS, HttpIssuer(live.url, token=lambda: "x", verify=True))
    with pytest.raises(IssuanceError, match="cannot be reached"):
        await wrong.start()


# --- both sides in any Python service (the docs/pki.md example) --------------------------

class WhoAmI:
    """An ASGI app answering with the caller's SPIFFE ID, refusing all but one."""

    def __init__(self, allowed: str) -> None:
        self.allowed = allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.responses import JSONResponse

        from bastion.pki.client import peer_spiffe_id

        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        caller = peer_spiffe_id(scope)
        status = 200 if caller == self.allowed else 403
        await JSONResponse({"caller": caller}, status)(scope, receive, send)


def served_serial(r: httpx.Response) -> str:
    der = r.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


async def test_a_python_service_serving_and_calling_with_workload_identities(provider):
    import uvicorn

    from bastion.edge.server import ServerLimits, protocol_class

    server_id = WorkloadIdentity(f"spiffe://{TD}/ns/demo/sa/inventory",
                                 CaIssuer(provider.ca, requester="test"),
                                 dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    await server_id.start()
    port = free_port()
    context = server_id.server_context()
    server = uvicorn.Server(uvicorn.Config(
        WhoAmI(ORDERS), host="127.0.0.1", port=port, log_config=None, lifespan="on",
        ssl_context_factory=lambda config, default: context,
        http=protocol_class(ServerLimits())))  # Bastion's protocol: the TLS extension
    task = asyncio.ensure_future(server._serve())  # noqa: SLF001 - no signal handlers here
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.05)
        async with identity(provider) as me:
            for host in ("localhost", "127.0.0.1"):
                async with httpx.AsyncClient(transport=me.async_transport()) as client:
                    r = await client.get(f"https://{host}:{port}/")
                assert r.status_code == 200 and r.json() == {"caller": ORDERS}
                assert served_serial(r) == server_id.current.serial
            old = server_id.current.serial
            await server_id.renew()  # the server's certificate, swapped in place
            async with httpx.AsyncClient(transport=me.async_transport()) as client:
                r = await client.get(f"https://localhost:{port}/")
            assert r.status_code == 200 and served_serial(r) == server_id.current.serial != old
        async with identity(provider, f"spiffe://{TD}/ns/x/sa/y") as stranger, \
                httpx.AsyncClient(transport=stranger.async_transport()) as client:
            assert (await client.get(f"https://localhost:{port}/")).status_code == 403
        bare = ssl.create_default_context(cadata=await provider.ca.trust_bundle_pem())
        async with httpx.AsyncClient(verify=bare) as client:
            with pytest.raises((httpx.ConnectError, httpx.ReadError,
                                httpx.RemoteProtocolError)):
                await client.get(f"https://localhost:{port}/")
    finally:
        server.should_exit = True
        await task
        await server_id.aclose()


class MixedIssuer:
    """Certificates from one CA, trust from another: a misconfigured workload."""

    def __init__(self, certificates: Any, trust: Any) -> None:
        self.certificates, self.trust = certificates, trust

    async def issue(self, *args: Any) -> str:
        return str(await self.certificates.issue(*args))

    async def trust_bundle(self) -> str:
        return str(await self.trust.trust_bundle())


async def test_a_certificate_not_chaining_to_the_trust_bundle_is_not_loaded(live, tmp_path,
                                                                          provider):
    token = client_token(live, "mixed-up", tmp_path, allowed=True)
    other_ca = HttpIssuer(live.url, token=lambda: token, verify=live.ssl_context())
    here = CaIssuer(provider.ca, requester="test")
    me = WorkloadIdentity(ORDERS, MixedIssuer(other_ca, here))
    with pytest.raises(IssuanceError, match="does not chain"):
        await me.start()
    assert me.current is None
    async with WorkloadIdentity(ORDERS, here) as good:
        before = good.current.serial
        good.issuer = MixedIssuer(other_ca, here)
        with pytest.raises(IssuanceError):
            await good.renew()
        assert good.current.serial == before  # the current certificate stays
