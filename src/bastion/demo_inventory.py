"""``bastion serve --demo``'s inventory service: a second server, on its own port
(``demo_inventory_port``), that the Orders API calls over mutual TLS with workload
certificates from Bastion's CA (docs/pki.md, "Service to service").

- ``GET /inventory/{item}`` → ``{"item": ..., "in_stock": n}``; 404 for an unknown item.
- Served by Bastion's own TLS (``edge/tls.py``'s ``TlsServing``: a server certificate from
  the internal CA, renewed; ``mtls = required``: the handshake fails without a client
  certificate chaining to the CA; revoked certificates get 401) behind the guarded
  HTTP protocol (``edge/server.py``).
- Authorization by the caller's SPIFFE ID (deny by default): only
  ``spiffe://<trust domain>/ns/demo/sa/orders`` may read; anyone else gets 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.edge.problem import problem
from bastion.edge.tls import TlsServing, mtls_spiffe_id

log = logging.getLogger("bastion.demo.inventory")
ORDERS_PATH = "/ns/demo/sa/orders"  # the one workload allowed to read stock
STOCK = {"espresso beans 1kg": 40, "milk frother": 5, "green tea 250g": 25, "tea": 100,
         "coffee": 100, "teapot": 0}
MAX_ITEM = 200


def orders_spiffe_id(trust_domain: str) -> str:
    return f"spiffe://{trust_domain}{ORDERS_PATH}"


class Inventory:
    """The stock, read by the Orders workload only."""

    def __init__(self, trust_domain: str, stock: dict[str, int] | None = None) -> None:
        self.allowed = orders_spiffe_id(trust_domain)
        self.stock = dict(STOCK if stock is None else stock)

    async def item(self, request: Request) -> Response:
        caller = mtls_spiffe_id(request.scope)
        if caller != self.allowed:  # no SPIFFE ID, or another workload's
            log.warning("inventory read refused for %s", caller or "a caller without a "
                        "SPIFFE ID")
            return problem(403, "this workload may not read the inventory")
        name = request.path_params["item"]
        if len(name) > MAX_ITEM:
            return problem(404, "no such item")
        count = self.stock.get(name.strip().lower())
        if count is None:
            return problem(404, "no such item")
        return JSONResponse({"item": name, "in_stock": count})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/inventory/{item:path}", self.item,
                                       methods=["GET"])])


class _InventoryTls(TlsServing):
    """``TlsServing`` for a second server in the process: SIGHUP stays the main
    server's (one handler per signal and loop)."""

    def _watch_sighup(self) -> None:
        return


def connect_host(host: str) -> str:
    """The address clients use for a server listening on ``host``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"
    if address.is_unspecified:  # listening everywhere: call it on loopback
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


class InventoryServer:
    """The inventory under uvicorn, on the running event loop, next to Bastion."""

    def __init__(self, settings: Any, provider: Any, port: int) -> None:
        self.port = port
        self.host = settings.host
        names = f"{settings.tls_hostnames},{connect_host(self.host)}"
        # its own server certificate (data_dir/demo-inventory/tls), mTLS required, trusting
        # the internal CA
        self.settings = settings.model_copy(update={
            "mtls": "required", "mtls_trust_bundle": None, "tls_cert": None,
            "tls_key": None, "tls_hostnames": names,
            "data_dir": Path(settings.data_dir) / "demo-inventory"})
        self.inventory = Inventory(settings.pki_trust_domain)
        self.tls = _InventoryTls(self.inventory.app(), self.settings,
                                 provider=lambda: provider)
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return inventory_url(self.host, self.port)

    async def start(self) -> None:
        """Bind and serve (``OSError`` when the port is taken)."""
        import uvicorn

        from bastion.edge.server import server_options

        sock = socket.create_server((self.host, self.port),
                                    family=socket.AF_INET6 if ":" in self.host
                                    else socket.AF_INET)
        config = uvicorn.Config(self.tls, lifespan="on", log_config=None,
                                ssl_context_factory=self.tls.context_factory,
                                access_log=False, server_header=False,
                                **server_options(self.settings))
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except SystemExit:  # uvicorn's answer to a failed lifespan startup
            sock.close()
            raise OSError("the inventory's TLS did not start (see the log)") from None
        self._server = server
        self._task = asyncio.ensure_future(server.main_loop())
        log.info("demo inventory service on %s (mutual TLS required; only %s may read)",
                 self.url, self.inventory.allowed)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.shutdown()


def inventory_url(host: str, port: int) -> str:
    """Where the inventory service is reached from this host."""
    address = connect_host(host)
    return f"https://{'[' + address + ']' if ':' in address else address}:{port}"


class DemoServices:
    """Pure ASGI around the served app (``bastion serve --demo``): once Bastion has
    started, the inventory service and the Orders workload identity start, and the
    Orders API checks stock through it (``app.state.inventory``); they stop first at
    shutdown. When the inventory cannot start (its port is taken), Orders run without
    the check and the reason is logged. With ``serve_inventory=False`` (every worker of
    ``serve --workers N`` but the leader) only the client starts: the leader's inventory
    answers it."""

    def __init__(self, app: ASGIApp, server: Any, settings: Any, *,
                 serve_inventory: bool = True) -> None:
        self.app = app
        self.server = server  # the BastionServer: its provider and composed app
        self.settings = settings
        self.serve_inventory = serve_inventory
        self.inventory: InventoryServer | None = None
        self.client: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.start()
            await send(message)

        await self.app(scope, receive_wrapper, send_wrapper)

    async def start(self) -> None:
        from bastion.orders.inventory import InventoryClient
        from bastion.pki.client import CaIssuer, WorkloadIdentity

        provider = self.server.provider
        port = self.settings.demo_inventory_port
        inventory: InventoryServer | None = None
        if self.serve_inventory:
            inventory = InventoryServer(self.settings, provider, port)
            try:
                await inventory.start()
            except OSError as exc:
                log.error("the demo inventory service did not start on port %d (%s): "
                          "orders are taken without a stock check", port, exc)
                return
        identity = WorkloadIdentity(orders_spiffe_id(self.settings.pki_trust_domain),
                                    CaIssuer(provider.ca, requester="bastion:demo-orders"))
        try:
            await identity.start()
        except Exception as exc:  # the CA refused: Orders run unchecked, said so
            log.error("the Orders workload certificate was not issued (%s): orders are "
                      "taken without a stock check", exc)
            if inventory is not None:
                await inventory.stop()
            return
        self.inventory = inventory
        self.client = InventoryClient(inventory_url(self.settings.host, port), identity)
        self.server.app.state.inventory = self.client

    async def stop(self) -> None:
        client, inventory = self.client, self.inventory
        self.client = self.inventory = None
        if client is not None:
            self.server.app.state.inventory = None
            await client.aclose()
        if inventory is not None:
            await inventory.stop()
