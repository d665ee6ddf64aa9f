"""Orders API: ``GET /orders`` (orders:ListOrders), ``GET /orders/{id}`` (orders:GetOrder),
``POST /orders`` (orders:CreateOrder). Who may call what is IAM's decision at the edge (the
bootstrap attaches policies to the roles ``order:view`` and ``order:create`` that tokens
carry); here callers see only their own orders, and every body is validated (any malformed
input is a 400 or 422, never a 500). Errors are RFC 9457 problem details.

Ownership is keyed by the principal, never by the bare token ``sub`` (see ``owner_key``).

Every access is an audit record (who read or changed which order), and so is every SQL
statement the service runs (class, statement text, parameter names but not values, rows,
user), like pgaudit.

Sensitive fields (``item``, ``shipping_address``, ``note``) are stored only sealed
(``orders.sealed``, :mod:`bastion.orders.sealing`); a row stored before sealing existed
is sealed the first time its owner reads it. A sealed value that does not open (altered,
moved from another order) is a 409 problem, the KMS being unavailable a 503: never a 500."""

from __future__ import annotations

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
from bastion.edge import http
from bastion.edge.authz import Guard, user_identity
from bastion.edge.problem import problem
from bastion.iam.authorizer import Authorizer, Principal, Subject
from bastion.kms.envelope import EnvelopeError, KeyUnavailable
from bastion.orders.inventory import StockCheck
from bastion.orders.sealing import Fields, OrderSealer
from bastion.store.fast import FastStore, Row
from bastion.tokens.verify import TokenVerifier, VerifiedToken

MAX_BODY = 16 * 1024
ORDER_ID_RE = re.compile(r"[0-9a-f]{1,64}")
ORDER_ARN = "arn:bastion:orders::{account}:order/{order_id}"
ALL_ORDERS_ARN = "arn:bastion:orders::{account}:order/*"
MAX_OWNER = 1024  # the orders.owner column
MAX_DELEGATION = 4  # nested ``act`` claims followed (RFC 8693 §4.1)
_TEXT = r"^[^\x00-\x08\x0b-\x1f\x7f]+$"  # printable, and line breaks


class NewOrder(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    item: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    quantity: int = Field(ge=1, le=10_000)
    unit_price_cents: int = Field(ge=0, le=100_000_000)
    shipping_address: str | None = Field(None, min_length=1, max_length=500, pattern=_TEXT)
    note: str | None = Field(None, min_length=1, max_length=1000, pattern=_TEXT)


def owner_key(subject: Subject, principal: Principal, claims: dict[str, Any]) -> str | None:
    """The key a caller's orders are stored under, or None when the credentials name no
    owner (refused).

    - a user: its user id (random, never reused, unchanged by a rename; rows stored before
      keys were principals stay valid);
    - a client: its principal ARN (``arn:bastion:iam::<acct>:client/<id>``), so a client id
      equal to a user id names another owner than that user;
    - a role session: the session ARN and the caller chain from ``act`` (RFC 8693 §4.1),
      ``<session arn>;act=<caller arn>[;act=…]``: two callers who pick the same session
      name do not share orders. A session token without ``act`` is refused.

    User ids are hex and ARNs start ``arn:``, so the three kinds never meet."""
    if subject.kind == "user":
        return principal.user_id
    if subject.session is None:
        return principal.arn
    chain = [principal.arn]
    act = claims.get("act")
    while isinstance(act, dict) and len(chain) <= MAX_DELEGATION:
        caller = act.get("sub")
        if not isinstance(caller, str) or not caller or ";" in caller:
            return None
        chain.append(caller)
        act = act.get("act")
    if len(chain) == 1 or act is not None:  # no caller named, or a chain deeper than followed
        return None
    key = ";act=".join(chain)
    return key if len(key) <= MAX_OWNER else None


def _public(order: Row | dict[str, Any], fields: Fields) -> dict[str, Any]:
    out = {"id": order["id"], "item": fields["item"], "quantity": order["quantity"],
           "unit_price_cents": order["unit_price_cents"],
           "total_cents": order["quantity"] * order["unit_price_cents"],
           "status": order["status"], "created_at": order["created_at"]}
    for name in ("shipping_address", "note"):
        if fields.get(name) is not None:
            out[name] = fields[name]
    return out


def _unreadable(order: Row) -> dict[str, Any]:
    """A listed order whose sealed fields do not open: its clear columns, marked."""
    return {"id": order["id"], "status": order["status"], "created_at": order["created_at"],
            "unreadable": True}


LIST_SQL = ("SELECT id, owner, item, quantity, unit_price_cents, status, created_at, sealed "
            "FROM orders WHERE owner = :owner ORDER BY created_at, id LIMIT 1000")
GET_SQL = ("SELECT id, owner, item, quantity, unit_price_cents, status, created_at, sealed "
           "FROM orders WHERE id = :id")
INSERT_SQL = ("INSERT INTO orders (id, owner, item, quantity, unit_price_cents, status, "
              "created_at, sealed) VALUES (:id, :owner, :item, :quantity, :unit_price_cents, "
              ":status, :created_at, :sealed)")
RESEAL_SQL = ("UPDATE orders SET sealed = :sealed, item = '' WHERE id = :id AND owner = :owner "
              "AND sealed IS NULL")


def _caller(request: Request) -> tuple[str | None, dict[str, Any]]:
    """The caller's owner key (None: refused) and audit identity, from what the Guard left
    in the scope state."""
    state = request.scope["state"]
    token: VerifiedToken = state["token"]
    subject: Subject = state["subject"]
    principal: Principal = state["principal"]
    return owner_key(subject, principal, token.claims), user_identity(subject, principal)


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

    def __init__(self, store: FastStore, audit: AuditTrail, account: str,
                 sealer: OrderSealer) -> None:
        self.store = store
        self.audit = audit
        self.account = account
        self.sealer = sealer

    async def _open(self, order: Row) -> Fields:
        """The order's sensitive fields (EnvelopeError, KeyUnavailable)."""
        sealed = order["sealed"]
        if sealed is None:  # stored before sealing: sealed by _reseal after this read
            return {"item": order["item"], "shipping_address": None, "note": None}
        return await self.sealer.open(order["owner"], order["id"], bytes(sealed))

    async def _reseal(self, actor: dict[str, Any], rows: list[Row]) -> None:
        """Seal orders stored in clear (rows from before sealing), with their records."""
        legacy = [r for r in rows if r["sealed"] is None]
        if not legacy:
            return
        async with self.store.transaction() as tx:
            for row in legacy:
                params = {"id": row["id"], "owner": row["owner"], "sealed": await self.sealer.seal(
                    row["owner"], row["id"], {"item": row["item"]})}
                count = await tx.run(RESEAL_SQL, **params)
                name, fields = statement(actor, RESEAL_SQL, params, count)
                await self.audit.record_in(tx, name, **fields)

    def _sealing_failed(self, exc: Exception) -> Response:
        if isinstance(exc, KeyUnavailable):
            return problem(503, "the order data key is unavailable; try again later",
                           headers={"Retry-After": "5"})
        return problem(409, "the stored order fails its integrity check")

    def _arn(self, order_id: str) -> list[dict[str, str]]:
        return [{"type": "Bastion::Orders::Order",
                 "ARN": ORDER_ARN.format(account=self.account, order_id=order_id)}]

    async def _no_owner(self, event: str, actor: dict[str, Any]) -> Response:
        await self.audit.emit(event, user_identity=actor, error_code="NoOwner",
                              error_message="the credentials name no owner of orders")
        return problem(403, "these credentials name no owner of orders (a role session "
                       "token must carry its caller in act)")

    async def list_orders(self, request: Request) -> Response:
        owner, actor = _caller(request)
        if owner is None:
            return await self._no_owner("ListOrders", actor)
        params = {"owner": owner}
        rows = await self.store.all(LIST_SQL, **params)
        listed: list[dict[str, Any]] = []
        unreadable: list[str] = []
        for row in rows:
            try:
                listed.append(_public(row, await self._open(row)))
            except EnvelopeError:
                listed.append(_unreadable(row))
                unreadable.append(str(row["id"]))
            except KeyUnavailable as exc:
                await self.audit.emit("ListOrders", user_identity=actor,
                                      error_code="KeyUnavailable", error_message=exc.code)
                return self._sealing_failed(exc)
        elements: dict[str, Any] = {"count": len(rows)}
        if unreadable:
            elements["unreadable"] = unreadable[:100]
        await self.audit.emit_many([
            statement(actor, LIST_SQL, params, len(rows)),
            ("ListOrders", {"user_identity": actor, "response_elements": elements,
                            "resources": self._arn("*")})])
        try:
            await self._reseal(actor, rows)
        except KeyUnavailable:
            pass  # they stay in clear until a later read
        return JSONResponse({"orders": listed})

    async def get_order(self, request: Request) -> Response:
        owner, actor = _caller(request)
        if owner is None:
            return await self._no_owner("GetOrder", actor)
        order_id = request.path_params["order_id"]
        events = []
        order = None
        if ORDER_ID_RE.fullmatch(order_id):
            order = await self.store.one(GET_SQL, id=order_id)
            events.append(statement(actor, GET_SQL, {"id": order_id}, int(order is not None)))
        # another user's order is indistinguishable from a missing one
        found = order is not None and order["owner"] == owner
        error: tuple[str, str] | None = None if found else (
            "NotFound", "no such order of this user")
        fields: Fields | None = None
        failure: Exception | None = None
        if found and order is not None:
            try:
                fields = await self._open(order)
            except EnvelopeError as exc:
                failure, error = exc, ("IntegrityError", "the sealed fields do not open")
            except KeyUnavailable as exc:
                failure, error = exc, ("KeyUnavailable", exc.code)
        events.append(("GetOrder", {
            "user_identity": actor, "request_parameters": {"orderId": order_id[:64]},
            "resources": self._arn(order_id[:64]),
            "error_code": None if error is None else error[0],
            "error_message": None if error is None else error[1]}))
        await self.audit.emit_many(events)
        if failure is not None:
            return self._sealing_failed(failure)
        if not found or order is None or fields is None:
            return problem(404, "no such order")
        try:
            await self._reseal(actor, [order])
        except KeyUnavailable:
            pass  # it stays in clear until a later read
        return JSONResponse(_public(order, fields))

    async def create_order(self, request: Request) -> Response:
        owner, actor = _caller(request)
        if owner is None:
            return await self._no_owner("CreateOrder", actor)
        try:
            data = NewOrder.model_validate(await http.read_json(request, MAX_BODY))
        except http.BodyError as exc:
            return problem(exc.status, str(exc))
        except ValidationError as exc:  # RFC 9457 §3.2: the specifics in an extension member
            return problem(422, "the order is invalid", errors=[
                {"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()])
        # demo mode: the inventory service is asked over mTLS (orders/inventory.py)
        stock: StockCheck | None = getattr(request.app.state, "inventory", None)
        refusal = await stock.check(data.item, data.quantity) if stock is not None else None
        if refusal is not None:
            await self.audit.emit("CreateOrder", user_identity=actor, error_code="NoStock",
                                  error_message="the inventory refused the order",
                                  request_parameters={"quantity": data.quantity})
            return refusal
        order_id = secrets.token_hex(8)
        sensitive: Fields = {"item": data.item, "shipping_address": data.shipping_address,
                             "note": data.note}
        try:
            sealed = await self.sealer.seal(owner, order_id, sensitive)
        except KeyUnavailable as exc:
            await self.audit.emit("CreateOrder", user_identity=actor,
                                  error_code="KeyUnavailable", error_message=exc.code)
            return self._sealing_failed(exc)
        # the clear item column stays empty: the sensitive fields are only in ``sealed``
        order = {"id": order_id, "owner": owner, "item": "",
                 "quantity": data.quantity, "unit_price_cents": data.unit_price_cents,
                 "status": "placed", "created_at": int(time.time()), "sealed": sealed}
        # the order and its records commit together: no order without its audit trail
        async with self.store.transaction() as tx:
            count = await tx.run(INSERT_SQL, **order)
            name, fields = statement(actor, INSERT_SQL, order, count)
            await self.audit.record_in(tx, name, **fields)
            await self.audit.record_in(
                tx, "CreateOrder", user_identity=actor,
                request_parameters={"quantity": data.quantity},  # no sealed field
                response_elements={"orderId": order["id"]},
                resources=self._arn(str(order["id"])))
        return JSONResponse(_public(order, sensitive), status_code=201,
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
                      audit: AuditTrail, sealer: OrderSealer) -> Starlette:
    """The Orders API on its own (behind Bastion's edge middleware)."""
    from bastion.edge.request import RequestContext

    return Starlette(routes=routes(OrdersAPI(store, audit, iam.account, sealer),
                                   Guard(verifier, iam, audit)),
                     middleware=[Middleware(RequestContext)])
