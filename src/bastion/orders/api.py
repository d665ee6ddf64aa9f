"""Orders API: ``GET /orders`` (orders:ListOrders), ``GET /orders/{id}`` (orders:GetOrder),
``POST /orders`` (orders:CreateOrder). Who may call what is IAM's decision at the edge (the
bootstrap attaches policies to the roles ``order:view`` and ``order:create`` that tokens
carry); here users see only their own orders, and every body is validated (any malformed
input is a 400 or 422, never a 500).

Every access is an audit record (who read or changed which order), and so is every SQL
statement the service runs (class, statement text, parameter names but not values, rows,
user), like pgaudit."""

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

from bastion.audit.trail import AuditTrail
from bastion.edge.authz import Guard, user_identity
from bastion.iam.authorizer import Authorizer
from bastion.store.fast import FastStore, Row
from bastion.tokens.verify import TokenVerifier, VerifiedToken

MAX_BODY = 16 * 1024
ORDER_ID_RE = re.compile(r"[0-9a-f]{1,64}")
ORDER_ARN = "arn:bastion:orders::{account}:order/{order_id}"
ALL_ORDERS_ARN = "arn:bastion:orders::{account}:order/*"


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


def _public(order: Row | dict[str, Any]) -> dict[str, Any]:
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


def _caller(request: Request) -> tuple[VerifiedToken, dict[str, Any]]:
    state = request.scope["state"]
    return state["token"], user_identity(state["subject"], state["principal"])


def statement(actor: dict[str, Any], sql: str, params: dict[str, Any],
              rows: int) -> tuple[str, dict[str, Any]]:
    """The pgaudit-like record of one statement: class, command, text, parameter names
    (never their values), rows, user."""
    command = sql.split(None, 1)[0].upper()
    return ("SqlStatement", {"user_identity": actor, "request_parameters": {
        "class": "READ" if command == "SELECT" else "WRITE", "command": command,
        "statement": sql, "parameters": sorted(params)}, "response_elements": {"rows": rows}})


class OrdersAPI:
    """Served from the fast store: one indexed statement per request."""

    def __init__(self, store: FastStore, audit: AuditTrail, account: str) -> None:
        self.store = store
        self.audit = audit
        self.account = account

    def _arn(self, order_id: str) -> list[dict[str, str]]:
        return [{"type": "Bastion::Orders::Order",
                 "ARN": ORDER_ARN.format(account=self.account, order_id=order_id)}]

    async def list_orders(self, request: Request) -> Response:
        token, actor = _caller(request)
        params = {"owner": token.subject}
        rows = await self.store.all(LIST_SQL, **params)
        await self.audit.emit_many([
            statement(actor, LIST_SQL, params, len(rows)),
            ("ListOrders", {"user_identity": actor, "response_elements": {"count": len(rows)},
                            "resources": self._arn("*")})])
        return JSONResponse({"orders": [_public(o) for o in rows]})

    async def get_order(self, request: Request) -> Response:
        token, actor = _caller(request)
        order_id = request.path_params["order_id"]
        events = []
        order = None
        if ORDER_ID_RE.fullmatch(order_id):
            order = await self.store.one(GET_SQL, id=order_id)
            events.append(statement(actor, GET_SQL, {"id": order_id}, int(order is not None)))
        # another user's order is indistinguishable from a missing one
        found = order is not None and order["owner"] == token.subject
        events.append(("GetOrder", {
            "user_identity": actor, "request_parameters": {"orderId": order_id[:64]},
            "resources": self._arn(order_id[:64]), "error_code": None if found else "NotFound",
            "error_message": None if found else "no such order of this user"}))
        await self.audit.emit_many(events)
        if not found or order is None:
            return _problem(404, "not_found")
        return JSONResponse(_public(order))

    async def create_order(self, request: Request) -> Response:
        token, actor = _caller(request)
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
        # the order and its records commit together: no order without its audit trail
        async with self.store.transaction() as tx:
            count = await tx.run(INSERT_SQL, **order)
            name, fields = statement(actor, INSERT_SQL, order, count)
            await self.audit.record_in(tx, name, **fields)
            await self.audit.record_in(
                tx, "CreateOrder", user_identity=actor,
                request_parameters={"item": data.item, "quantity": data.quantity},
                response_elements={"orderId": order["id"]},
                resources=self._arn(str(order["id"])))
        return JSONResponse(_public(order), status_code=201,
                            headers={"Location": f"/orders/{order['id']}"})


def routes(api: OrdersAPI, guard: Guard) -> list[Route]:
    """The Orders routes, each with the IAM action and resource it is authorized as."""
    return [
        Route("/orders", api.list_orders, methods=["GET"],
              middleware=guard("orders:ListOrders", ALL_ORDERS_ARN)),
        Route("/orders", api.create_order, methods=["POST"],
              middleware=guard("orders:CreateOrder", ALL_ORDERS_ARN)),
        Route("/orders/{order_id}", api.get_order, methods=["GET"],
              middleware=guard("orders:GetOrder", ORDER_ARN)),
    ]


def create_orders_app(store: FastStore, verifier: TokenVerifier, iam: Authorizer,
                      audit: AuditTrail) -> Starlette:
    """The Orders API on its own (behind Bastion's edge middleware)."""
    from bastion.edge.request import RequestContext

    return Starlette(routes=routes(OrdersAPI(store, audit, iam.account),
                                   Guard(verifier, iam, audit)),
                     middleware=[Middleware(RequestContext)])
