"""ACME state on the fast store (hand-written SQL for SQLite and PostgreSQL alike; tables of
migration 0009). Orders and authorizations keep their details as JSON in ``body``."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from bastion.store.fast import FastStore, Row, Tx


def new_id() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def now() -> int:
    return int(time.time())


@dataclass
class Account:
    id: str
    thumbprint: str
    jwk: dict[str, Any]
    status: str
    contact: list[str]
    eab_kid: str | None = None
    policy: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> Account:
        return cls(row[0], row[1], json.loads(row[2]), row[3], json.loads(row[4]), row[5],
                   row[6])


@dataclass
class Authz:
    id: str
    account_id: str
    order_id: str
    status: str
    expires_at: int
    identifier: dict[str, str]
    token: str
    challenges: list[dict[str, Any]]
    wildcard: bool = False

    @classmethod
    def from_row(cls, row: Row) -> Authz:
        b = json.loads(row[5])
        return cls(row[0], row[1], row[2], row[3], row[4], b["identifier"], b["token"],
                   b["challenges"], b.get("wildcard", False))

    def body(self) -> str:
        return json.dumps({"identifier": self.identifier, "token": self.token,
                           "challenges": self.challenges, "wildcard": self.wildcard})

    def current_status(self, at: int) -> str:
        if self.status in ("pending", "valid") and self.expires_at <= at:
            return "expired"
        return self.status


@dataclass
class Order:
    id: str
    account_id: str
    status: str
    expires_at: int
    identifiers: list[dict[str, str]]
    authorizations: list[str]
    not_before: str | None = None
    not_after: str | None = None
    error: dict[str, Any] | None = None
    certificate: str | None = None
    replaces: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Row) -> Order:
        b = json.loads(row[4])
        return cls(row[0], row[1], row[2], row[3], b["identifiers"], b["authorizations"],
                   b.get("notBefore"), b.get("notAfter"), b.get("error"), b.get("certificate"),
                   b.get("replaces"))

    def body(self) -> str:
        return json.dumps({"identifiers": self.identifiers, "authorizations":
                           self.authorizations, "notBefore": self.not_before, "notAfter":
                           self.not_after, "error": self.error, "certificate":
                           self.certificate, "replaces": self.replaces})

    def current_status(self, at: int) -> str:
        if self.status in ("pending", "ready") and self.expires_at <= at:
            return "invalid"
        return self.status


ACCOUNT_BY_ID = ("SELECT id, thumbprint, jwk, status, contact, eab_kid, policy "
                 "FROM acme_accounts WHERE id = :id")
ACCOUNT_BY_THUMBPRINT = ("SELECT id, thumbprint, jwk, status, contact, eab_kid, policy "
                         "FROM acme_accounts WHERE thumbprint = :t")
SAVE_ORDER = "UPDATE acme_orders SET status = :s, body = :b WHERE id = :id"
SAVE_ORDER_IF = SAVE_ORDER + " AND status = :expect"
SAVE_AUTHZ = "UPDATE acme_authzs SET status = :s, body = :b WHERE id = :id"
SAVE_AUTHZ_IF = SAVE_AUTHZ + " AND status = :expect"


class AcmeStore:
    def __init__(self, fast: FastStore) -> None:
        self.fast = fast

    # --- accounts ---------------------------------------------------------------------------
    async def account(self, account_id: str) -> Account | None:
        row = await self.fast.one(ACCOUNT_BY_ID, id=account_id)
        return Account.from_row(row) if row is not None else None

    async def account_by_thumbprint(self, thumbprint: str) -> Account | None:
        row = await self.fast.one(ACCOUNT_BY_THUMBPRINT, t=thumbprint)
        return Account.from_row(row) if row is not None else None

    @staticmethod
    async def insert_account(tx: Tx, a: Account) -> None:
        await tx.run("INSERT INTO acme_accounts (id, thumbprint, jwk, status, contact, eab_kid, "
                     "policy, created_at) VALUES (:id, :t, :jwk, :s, :c, :e, :p, :now)",
                     id=a.id, t=a.thumbprint, jwk=json.dumps(a.jwk), s=a.status,
                     c=json.dumps(a.contact), e=a.eab_kid, p=a.policy, now=now())

    @staticmethod
    async def update_account(tx: Tx, a: Account) -> None:
        await tx.run("UPDATE acme_accounts SET thumbprint = :t, jwk = :jwk, status = :s, "
                     "contact = :c WHERE id = :id", id=a.id, t=a.thumbprint,
                     jwk=json.dumps(a.jwk), s=a.status, c=json.dumps(a.contact))

    # --- EAB keys ---------------------------------------------------------------------------
    async def eab_key(self, kid: str) -> tuple[bytes, str | None, str | None] | None:
        row = await self.fast.one("SELECT mac_key, policy, account_id FROM acme_eab_keys "
                                  "WHERE kid = :k", k=kid)
        return (bytes(row[0]), row[1], row[2]) if row is not None else None

    @staticmethod
    async def bind_eab(tx: Tx, kid: str, account_id: str) -> bool:
        """Mark the key used; False when another account used it first (single use)."""
        return await tx.run("UPDATE acme_eab_keys SET account_id = :a WHERE kid = :k AND "
                            "account_id IS NULL", a=account_id, k=kid) == 1

    @staticmethod
    async def insert_eab(tx: Tx, kid: str, wrapped: bytes, policy: str | None) -> None:
        await tx.run("INSERT INTO acme_eab_keys (kid, mac_key, policy, account_id, created_at) "
                     "VALUES (:k, :m, :p, NULL, :now)", k=kid, m=wrapped, p=policy, now=now())

    # --- orders and authorizations ------------------------------------------------------------
    async def order(self, order_id: str) -> Order | None:
        row = await self.fast.one("SELECT id, account_id, status, expires_at, body FROM "
                                  "acme_orders WHERE id = :id", id=order_id)
        return Order.from_row(row) if row is not None else None

    async def orders_of(self, account_id: str, at: int) -> list[str]:
        rows = await self.fast.all("SELECT id FROM acme_orders WHERE account_id = :a AND "
                                   "expires_at > :now ORDER BY expires_at LIMIT 1000",
                                   a=account_id, now=at)
        return [r[0] for r in rows]

    async def authz(self, authz_id: str) -> Authz | None:
        row = await self.fast.one("SELECT id, account_id, order_id, status, expires_at, body "
                                  "FROM acme_authzs WHERE id = :id", id=authz_id)
        return Authz.from_row(row) if row is not None else None

    @staticmethod
    async def authzs_of(tx: Tx, order_id: str) -> list[Authz]:
        rows = await tx.all("SELECT id, account_id, order_id, status, expires_at, body FROM "
                            "acme_authzs WHERE order_id = :o", o=order_id)
        return [Authz.from_row(r) for r in rows]

    @staticmethod
    async def insert_order(tx: Tx, order: Order, authzs: list[Authz]) -> None:
        await tx.run("INSERT INTO acme_orders (id, account_id, status, expires_at, body) "
                     "VALUES (:id, :a, :s, :e, :b)", id=order.id, a=order.account_id,
                     s=order.status, e=order.expires_at, b=order.body())
        await tx.many("INSERT INTO acme_authzs (id, account_id, order_id, status, expires_at, "
                      "body) VALUES (:id, :a, :o, :s, :e, :b)",
                      [{"id": z.id, "a": z.account_id, "o": z.order_id, "s": z.status,
                        "e": z.expires_at, "b": z.body()} for z in authzs])

    @staticmethod
    async def lock_order(tx: Tx, order_id: str) -> None:
        """Take the order's row lock until ``tx`` ends (a no-op write: PostgreSQL locks the
        row, SQLite the database)."""
        await tx.run("UPDATE acme_orders SET status = status WHERE id = :id", id=order_id)

    @staticmethod
    async def save_order(tx: Tx, order: Order, *, expect: str | None = None) -> bool:
        """Write the order; with ``expect``, only if its stored status is still that (a
        compare-and-set: two concurrent finalizations, one wins)."""
        if expect is None:
            return await tx.run(SAVE_ORDER, s=order.status, b=order.body(), id=order.id) == 1
        return await tx.run(SAVE_ORDER_IF, s=order.status, b=order.body(), id=order.id,
                            expect=expect) == 1

    @staticmethod
    async def save_authz(tx: Tx, z: Authz, *, expect: str | None = None) -> bool:
        if expect is None:
            return await tx.run(SAVE_AUTHZ, s=z.status, b=z.body(), id=z.id) == 1
        return await tx.run(SAVE_AUTHZ_IF, s=z.status, b=z.body(), id=z.id,
                            expect=expect) == 1

    # --- certificates -----------------------------------------------------------------------
    @staticmethod
    async def insert_certificate(tx: Tx, serial: str, account_id: str, order_id: str,
                                 cert_id: str, chain: str, not_before: int,
                                 not_after: int) -> None:
        await tx.run("INSERT INTO acme_certificates (serial, account_id, order_id, cert_id, "
                     "chain, not_before, not_after, revoked_at, created_at) VALUES (:s, :a, "
                     ":o, :c, :ch, :nb, :na, NULL, :now)", s=serial, a=account_id,
                     o=order_id, c=cert_id, ch=chain, nb=not_before, na=not_after, now=now())

    async def certificate(self, serial: str) -> Row | None:
        return await self.fast.one("SELECT serial, account_id, order_id, cert_id, chain, "
                                   "not_before, not_after, revoked_at FROM acme_certificates "
                                   "WHERE serial = :s", s=serial)

    async def certificate_by_cert_id(self, cert_id: str) -> Row | None:
        return await self.fast.one("SELECT serial, account_id, order_id, cert_id, chain, "
                                   "not_before, not_after, revoked_at FROM acme_certificates "
                                   "WHERE cert_id = :c", c=cert_id)

    @staticmethod
    async def mark_revoked(tx: Tx, serial: str) -> bool:
        return await tx.run("UPDATE acme_certificates SET revoked_at = :now WHERE serial = :s "
                            "AND revoked_at IS NULL", s=serial, now=now()) == 1
