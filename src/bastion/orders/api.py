"""Orders API. ``GET /orders`` and ``GET /orders/{id}`` need scope and role ``order:view``;
``POST /orders`` needs ``order:create``. Users see only their own orders; every body is
validated (any malformed input is a 400 or 422, never a 500)."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.store.fast import FastStore, Row
from bastion.tokens.errors import BearerError
from bastion.tokens.starlette import BearerAuthMiddleware, authorize, bearer_error_response
from bastion.tokens.verify import TokenVerifier

MAX_BODY = 16 * 1024
ORDER_ID_RE = re.compile(r"[0-9a-f]{1,64}")
VIEW, CREATE = "order:view", "order:create"


class NewOrder(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    item: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    quantity: int = Field(ge=1, le=10_000)
    unit_price_cents: int = Field(ge=0, le=100_000_000)


def _problem(status: int, title: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": title}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def _public(order: Row) -> dict[str, Any]:
    return {"id": order["id"], "item": order["item"], "quantity": order["quantity"],
            "unit_price_cents": order["unit_price_cents"],
            "total_cents": order["quantity"] * order["unit_price_cents"],
            "status": order["status"], "created_at": order["created_at"]}


LIST_SQL = ("SELECT id, owner, item, quantity, unit_price_cents, status, created_at "
            "FROM orders WHERE owner = :owner ORDER BY created_at, id LIMIT 1000")
GET_SQL = ("SELECT id, owner, item, quantity, unit_price_cents, status, created_at "
           "FROM orders WHERE id = :id")
INSERT_SQL = ("INSERT INTO orders (id, owner, item, quantity, unit_price_cents, status, "
              "created_at) VALUES (:id, :owner, :item, :quantity, :unit_price_cents, :status, "
              ":created_at)")


class OrdersAPI:
    """Served from the fast store: one indexed statement per request."""

    def __init__(self, store: FastStore) -> None:
        self.store = store

    async def list_orders(self, request: Request) -> Response:
        try:
            token = authorize(request, scopes=[VIEW], roles=[VIEW])
        except BearerError as err:
            return bearer_error_response(err)
        rows = await self.store.all(LIST_SQL, owner=token.subject)
        return JSONResponse({"orders": [_public(o) for o in rows]})

    async def get_order(self, request: Request) -> Response:
        try:
            token = authorize(request, scopes=[VIEW], roles=[VIEW])
        except BearerError as err:
            return bearer_error_response(err)
        order_id = request.path_params["order_id"]
        order = await self.store.one(GET_SQL, id=order_id) \
            if ORDER_ID_RE.fullmatch(order_id) else None
        # another user's order is indistinguishable from a missing one
        if order is None or order["owner"] != token.subject:
            return _problem(404, "not_found")
        return JSONResponse(_public(order))

    async def create_order(self, request: Request) -> Response:
        try:
            token = authorize(request, scopes=[CREATE], roles=[CREATE])
        except BearerError as err:
            return bearer_error_response(err)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _problem(415, "unsupported_media_type", "send application/json")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _problem(413, "payload_too_large")
        try:
            data = NewOrder.model_validate(json.loads(body))
        except (ValueError, RecursionError) as exc:
            detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()] \
                if isinstance(exc, ValidationError) else "body is not valid JSON"
            return _problem(422 if isinstance(exc, ValidationError) else 400,
                            "invalid_body", detail)
        order = {"id": secrets.token_hex(8), "owner": token.subject, "item": data.item,
                 "quantity": data.quantity, "unit_price_cents": data.unit_price_cents,
                 "status": "placed", "created_at": int(time.time())}
        async with self.store.transaction() as tx:
            await tx.run(INSERT_SQL, **order)
        return JSONResponse(_public(order), status_code=201,
                            headers={"Location": f"/orders/{order['id']}"})


def create_orders_app(store: FastStore, verifier: TokenVerifier) -> Starlette:
    api = OrdersAPI(store)
    routes = [
        Route("/orders", api.list_orders, methods=["GET"]),
        Route("/orders", api.create_order, methods=["POST"]),
        Route("/orders/{order_id}", api.get_order, methods=["GET"]),
    ]
    return Starlette(routes=routes,
                     middleware=[Middleware(BearerAuthMiddleware, verifier=verifier)])
