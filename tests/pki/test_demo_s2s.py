"""The demo's service-to-service call: the Orders API asks the inventory service for stock
over mutual TLS with its workload certificate. In process (the composed app, a real
inventory server on a socket), then end to end with ``bastion serve --demo``."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.app import build_app
from bastion.demo_inventory import InventoryServer, orders_spiffe_id
from bastion.orders.inventory import InventoryClient
from bastion.pki.client import CaIssuer, WorkloadIdentity
from tests.conftest import ISSUER, sqlite_copy
from tests.flows import add_user, bearer
from tests.live import BASTION, LiveServer, free_port

pytestmark = pytest.mark.anyio
TD = "bastion.internal"
TEA = {"item": "tea", "quantity": 2, "unit_price_cents": 350}


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
async def inventory(provider: Any, settings: Any) -> AsyncIterator[InventoryServer]:
    inv = InventoryServer(settings, provider, free_port())
    await inv.start()
    try:
        yield inv
    finally:
        await inv.stop()


@pytest.fixture
async def token(provider: Any) -> str:
    user = await add_user(provider, "alice")
    return str(provider.tokens.access_token(
        subject=user, client_id="orders-test", audience=provider.api_audience,
        scope="order:view order:create", ttl=300, roles=("order:view", "order:create")).token)


async def orders_app(provider: Any, inv: InventoryServer | None,
                     spiffe_id: str = orders_spiffe_id(TD)) -> tuple[Any, Any]:
    app = build_app(provider, demo=True)
    client = None
    if inv is not None:
        identity = WorkloadIdentity(spiffe_id, CaIssuer(provider.ca, requester="test"))
        await identity.start()
        client = app.state.inventory = InventoryClient(inv.url, identity)
    return app, client


async def post(app: Any, token: str, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        return await http.post("/orders", json=body, headers=bearer(token))


@pytest.mark.parametrize("item, quantity, status", [
    pytest.param("tea", 2, 201, id="in-stock"),
    pytest.param("Green tea 250g", 25, 201, id="exactly-the-stock"),
    pytest.param("unobtainium", 1, 422, id="unknown-item"),
    pytest.param("teapot", 1, 409, id="out-of-stock"),
    pytest.param("milk frother", 6, 409, id="more-than-the-stock"),
    pytest.param("tea?x=1#y", 1, 422, id="query-characters-stay-in-the-item"),
    pytest.param("tea/coffee", 1, 422, id="slash-stays-in-the-item"),
])
async def test_order_creation_consults_the_inventory(provider, inventory, token, item,
                                                     quantity, status):
    app, client = await orders_app(provider, inventory)
    try:
        r = await post(app, token, {"item": item, "quantity": quantity,
                                    "unit_price_cents": 100})
    finally:
        await client.aclose()
    assert r.status_code == status, r.text
    if status != 201:
        assert r.headers["content-type"] == "application/problem+json"
        listed = await provider.fast.all("SELECT id FROM orders")
        assert listed == []  # a refused order is not stored


async def test_an_inventory_outage_is_a_503(provider, inventory, token):
    app, client = await orders_app(provider, inventory)
    await inventory.stop()
    try:
        r = await post(app, token, TEA)
    finally:
        await client.aclose()
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.headers["content-type"] == "application/problem+json"


async def test_orders_with_the_wrong_workload_identity_get_503_not_stock(provider, inventory,
                                                                        token):
    app, client = await orders_app(provider, inventory, f"spiffe://{TD}/ns/demo/sa/other")
    try:
        r = await post(app, token, TEA)
    finally:
        await client.aclose()
    assert r.status_code == 503  # the inventory said 403: Orders cannot check, so refuse


async def test_without_the_demo_inventory_orders_are_unchanged(provider, token):
    app, _ = await orders_app(provider, None)
    r = await post(app, token, {"item": "unobtainium", "quantity": 1,
                                "unit_price_cents": 100})
    assert r.status_code == 201  # no inventory configured: no call, as before


# --- end to end: `bastion serve --demo` -----------------------------------------------------

@pytest.fixture
def demo(demo_live: LiveServer) -> LiveServer:
    """``bastion serve --demo`` (tests/pki/conftest.py)."""
    return demo_live


def order_token(live: LiveServer) -> str:
    client = live.add_client("shop", [], "--grant-type", "client_credentials", "--scope",
                             "order:create", "--scope", "order:view", "--role", "order:create",
                             "--role", "order:view")
    with live.http() as http:
        r = http.post("/token", data={"grant_type": "client_credentials",
                                      "scope": "order:create order:view"},
                      auth=(client["client_id"], client["client_secret"]))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_demo_orders_consult_the_inventory_over_mtls(demo: LiveServer):
    token = order_token(demo)
    with demo.http() as http:
        def create(item: str, quantity: int = 1) -> httpx.Response:
            return http.post("/orders", json={"item": item, "quantity": quantity,
                                              "unit_price_cents": 100},
                             headers=bearer(token))

        made = create("tea", 3)
        assert made.status_code == 201, made.text
        assert create("unobtainium").status_code == 422
        short = create("teapot")
        assert short.status_code == 409 and short.json()["in_stock"] == 0
        listed = http.get("/orders", headers=bearer(token)).json()["orders"]
        assert [o["item"] for o in listed] == ["tea"]
    log = demo.log.read_text()
    assert "demo inventory service on https://127.0.0.1:" in log
    assert "Traceback" not in log


def test_demo_inventory_refuses_other_callers(demo: LiveServer, tmp_path: Path):
    url = demo.env["INVENTORY_URL"]
    bundle = subprocess.run([BASTION, "ca", "export", "--data-dir", str(demo.data_dir)],
                            capture_output=True, text=True, env=demo.env, check=True,
                            timeout=60).stdout
    # no client certificate: the handshake fails, before any HTTP
    with httpx.Client(verify=ssl.create_default_context(cadata=bundle)) as http, \
            pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        http.get(url + "/inventory/tea")
    # a valid workload certificate of another workload: 403
    other = f"spiffe://{TD}/ns/demo/sa/reporting"
    subprocess.run([BASTION, "pki", "issue", "--profile", "workload", "--spiffe-id", other,
                    "--out", "reporting", "--data-dir", str(demo.data_dir), "--json"],
                   cwd=tmp_path, env=demo.env, check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(cadata=bundle)
    ctx.load_cert_chain(tmp_path / "reporting.crt", tmp_path / "reporting.key")
    with httpx.Client(verify=ctx) as http:
        r = http.get(url + "/inventory/tea")
    assert r.status_code == 403 and "in_stock" not in r.text
    assert json.loads(r.text)["status"] == 403


async def test_demo_services_start_and_stop_with_bastion(provider, settings, token, caplog):
    """``DemoServices`` (what ``serve --demo`` wraps around Bastion): the inventory and the
    Orders identity start after Bastion, and a taken port leaves orders unchecked, said so."""
    import socket
    from types import SimpleNamespace

    from bastion.demo_inventory import DemoServices

    port = free_port()
    bastion = SimpleNamespace(provider=provider, app=build_app(provider, demo=True))
    services = DemoServices(bastion, bastion, settings.model_copy(
        update={"demo_inventory_port": port}))
    with socket.create_server(("127.0.0.1", port)):  # someone else holds the port
        await services.start()
    assert services.inventory is None
    assert getattr(bastion.app.state, "inventory", None) is None
    assert "did not start on port" in caplog.text
    unchecked = await post(bastion.app, token, {"item": "unobtainium", "quantity": 1,
                                                "unit_price_cents": 1})
    assert unchecked.status_code == 201
    await services.start()
    try:
        assert bastion.app.state.inventory is services.client
        assert (await post(bastion.app, token, TEA)).status_code == 201
        assert (await post(bastion.app, token, {"item": "unobtainium", "quantity": 1,
                                                "unit_price_cents": 1})).status_code == 422
    finally:
        await services.stop()
    assert services.inventory is None and services.client is None
    assert bastion.app.state.inventory is None  # orders are taken unchecked again
    with socket.create_server(("127.0.0.1", port)):  # the port is free again
        pass
