"""The Orders API's stock check (``bastion serve --demo``): a call to the inventory service
over mutual TLS with the Orders workload certificate (``bastion.pki.client``).

Configured only in demo mode (``app.state.inventory``); without it orders are taken as
before. Every failure is a problem answer, never a 500: an unknown item 422, too little
stock 409, an inventory that cannot be reached or refuses the Orders workload 503."""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from starlette.responses import Response

from bastion.edge.problem import problem

log = logging.getLogger("bastion.orders.inventory")
TIMEOUT = 3.0
UNAVAILABLE = {"Retry-After": "5"}


class StockCheck(Protocol):
    async def check(self, item: str, quantity: int) -> Response | None:
        """None when ``quantity`` of ``item`` is in stock, else the problem to answer."""
        ...


class InventoryClient:
    """``GET <url>/inventory/{item}`` through a workload identity's transport."""

    def __init__(self, url: str, identity: Any, *, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.identity = identity  # a bastion.pki.client.WorkloadIdentity, started
        self.client = httpx.AsyncClient(base_url=url, transport=identity.async_transport(),
                                        timeout=timeout)

    async def check(self, item: str, quantity: int) -> Response | None:
        try:
            r = await self.client.get(f"/inventory/{quote(item, safe='')}")
        except httpx.HTTPError as exc:
            log.error("the inventory at %s cannot be reached (%s)", self.url,
                      type(exc).__name__)
            return problem(503, "the inventory is unavailable; try again later",
                           headers=UNAVAILABLE)
        if r.status_code == 404:
            return problem(422, "no such item in the inventory")
        if r.status_code != 200:
            log.error("the inventory at %s answered %d", self.url, r.status_code)
            return problem(503, "the inventory is unavailable; try again later",
                           headers=UNAVAILABLE)
        try:
            in_stock = r.json()["in_stock"]
        except (ValueError, KeyError, TypeError):
            in_stock = None
        if not isinstance(in_stock, int) or isinstance(in_stock, bool):
            log.error("the inventory at %s answered without a stock count", self.url)
            return problem(503, "the inventory is unavailable; try again later",
                           headers=UNAVAILABLE)
        if in_stock < quantity:
            return problem(409, "not enough of this item in stock", in_stock=in_stock)
        return None

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.identity.aclose()
