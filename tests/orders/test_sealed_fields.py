"""Orders' sensitive fields at rest: envelope encryption under the Orders KMS key with a
caching materials manager (bastion.orders.sealing, bastion.kms.envelope). Each attack the
issue names is a case: the database without the root key, ciphertexts swapped between
orders and owners, truncated and garbled blobs. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from bastion.kms import ciphertext
from bastion.kms.core import Caller
from bastion.kms.envelope import Bounds, EnvelopeError, KeyUnavailable, encrypted_key
from bastion.kms.filekeeper import FileKeeper
from bastion.kms.keyfile import KeyWrapper
from bastion.kms.service import KMS
from bastion.orders.sealing import ALIAS, OrderSealer
from tests.flows import add_user, bearer

pytestmark = pytest.mark.anyio

ITEM, ADDRESS, NOTE = "secret-sauce-7f3a", "221B Baker Street, London", "ring twice, 4711"
ORDER = {"item": ITEM, "quantity": 2, "unit_price_cents": 350, "shipping_address": ADDRESS,
         "note": NOTE}


def mint(provider: Any, subject: str) -> str:
    return provider.tokens.access_token(
        subject=subject, client_id="orders-test", audience=provider.api_audience,
        scope="order:view order:create", ttl=300, roles=("order:view", "order:create")).token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def events(provider: Any, name: str) -> list[dict[str, Any]]:
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT body FROM audit_events ORDER BY seq")
    return [r for r in (json.loads(bytes(x[0])) for x in rows) if r["eventName"] == name]


async def place(http: httpx.AsyncClient, token: str, **over: Any) -> dict[str, Any]:
    r = await http.post("/orders", json={**ORDER, **over}, headers=bearer(token))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def raw_row(provider: Any, order_id: str) -> dict[str, Any]:
    row = await provider.fast.one("SELECT id, owner, item, quantity, unit_price_cents, "
                                  "status, created_at, sealed FROM orders WHERE id = :id",
                                  id=order_id)
    assert row is not None
    return {k: row[k] for k in ("id", "owner", "item", "quantity", "unit_price_cents",
                                "status", "created_at", "sealed")}


async def set_sealed(provider: Any, order_id: str, blob: bytes | None) -> None:
    async with provider.fast.transaction() as tx:
        await tx.run("UPDATE orders SET sealed = :s WHERE id = :id", s=blob, id=order_id)


@pytest.fixture
async def alice_token(provider: Any) -> str:
    return mint(provider, await add_user(provider, "alice"))


@pytest.fixture
async def bob_token(provider: Any) -> str:
    return mint(provider, await add_user(provider, "bob"))


# --- at rest ----------------------------------------------------------------------------------
async def test_row_and_audit_hold_no_plaintext_and_answers_are_unchanged(provider, http,
                                                                        alice_token):
    created = await place(http, alice_token)
    assert {k: created[k] for k in ORDER} == ORDER
    row = await raw_row(provider, created["id"])
    assert row["item"] == "" and row["sealed"] is not None
    dump = repr(row).encode() + bytes(row["sealed"])
    for secret in (ITEM, ADDRESS, NOTE, "Baker"):
        assert secret.encode() not in dump
    await provider.audit.flush()
    trail = b"".join(bytes(r[0]) for r in await provider.fast.all("SELECT body FROM "
                                                                  "audit_events"))
    assert ITEM.encode() not in trail and b"Baker" not in trail
    got = await http.get(f"/orders/{created['id']}", headers=bearer(alice_token))
    assert got.status_code == 200 and got.json() == created
    listed = await http.get("/orders", headers=bearer(alice_token))
    assert listed.json()["orders"] == [created]
    # optional fields left out are left out of the answer, as before
    plain = await place(http, alice_token, shipping_address=None, note=None)
    assert "shipping_address" not in plain and "note" not in plain


async def test_the_orders_key_is_made_once_and_refuses_api_callers(provider, http,
                                                                  alice_token):
    await place(http, alice_token)
    await place(http, alice_token)
    tagged = await provider.fast.one("SELECT COUNT(*) FROM kms_tags WHERE tag_key = :k "
                                     "AND tag_value = 'orders'", k="bastion:service")
    assert tagged is not None and tagged[0] == 1  # made on first use, once
    key_id = await provider.kms.alias(ALIAS)
    assert key_id is not None
    meta = await provider.kms.call("DescribeKey", {"KeyId": ALIAS},
                                   Caller("op", provider.settings.account_id, operator=True))
    assert meta["KeyMetadata"]["KeyId"] == key_id
    policy = json.loads((await provider.kms.call(
        "GetKeyPolicy", {"KeyId": key_id}, Caller("op", provider.settings.account_id,
                                                  operator=True)))["Policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and "kms:Decrypt" not in deny["NotAction"]


@pytest.mark.waf_off
@pytest.mark.parametrize("field,value", [
    ("shipping_address", "a\x00b"), ("shipping_address", ""), ("note", "x" * 1001),
    ("note", 5), ("shipping_address", ["x"])], ids=["nul", "empty", "long", "int", "list"])
async def test_bad_sealed_fields_are_422(provider, http, alice_token, field, value):
    r = await http.post("/orders", json={**ORDER, field: value}, headers=bearer(alice_token))
    assert r.status_code == 422


# --- attacks ----------------------------------------------------------------------------------
async def test_database_without_the_root_key_reveals_nothing(provider, http, alice_token):
    """Someone with the database (every row, every wrapped key version) and no root key."""
    created = await place(http, alice_token)
    blob = bytes((await raw_row(provider, created["id"]))["sealed"])
    stranger = KMS(provider.fast, FileKeeper(KeyWrapper(os.urandom(32))), provider.iam,
                   provider.audit, account=provider.settings.account_id, cache_ttl=0)
    sealer = OrderSealer(stranger, provider.settings.account_id)
    owner = (await raw_row(provider, created["id"]))["owner"]
    with pytest.raises(KeyUnavailable):  # the Orders key's material does not unwrap
        await sealer.open(owner, created["id"], blob)
    versions = await provider.fast.all("SELECT material FROM kms_key_versions")
    assert all(ITEM.encode() not in bytes(v[0]) for v in versions)


async def test_ciphertext_swapped_between_orders_is_refused(provider, http, alice_token):
    a = await place(http, alice_token, item="first")
    b = await place(http, alice_token, item="second")
    await set_sealed(provider, b["id"], bytes((await raw_row(provider, a["id"]))["sealed"]))
    r = await http.get(f"/orders/{b['id']}", headers=bearer(alice_token))
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert "first" not in r.text
    listed = {o["id"]: o for o in
              (await http.get("/orders", headers=bearer(alice_token))).json()["orders"]}
    assert listed[a["id"]]["item"] == "first"
    assert listed[b["id"]] == {"id": b["id"], "status": "placed",
                               "created_at": b["created_at"], "unreadable": True}
    failed = [e for e in await events(provider, "GetOrder") if e.get("errorCode")]
    assert failed and failed[-1]["errorCode"] == "IntegrityError"


async def test_ciphertext_swapped_between_owners_is_refused(provider, http, alice_token,
                                                           bob_token):
    mine = await place(http, alice_token, item="alice-only")
    theirs = await place(http, bob_token, item="bob-thing")
    # bob's row gets alice's sealed fields: it must not show him alice's item
    await set_sealed(provider, theirs["id"],
                     bytes((await raw_row(provider, mine["id"]))["sealed"]))
    r = await http.get(f"/orders/{theirs['id']}", headers=bearer(bob_token))
    assert r.status_code == 409 and "alice-only" not in r.text
    # and moving the owner column instead is caught the same way
    async with provider.fast.transaction() as tx:
        await tx.run("UPDATE orders SET owner = :o WHERE id = :id", id=mine["id"],
                     o=(await raw_row(provider, theirs["id"]))["owner"])
    r = await http.get(f"/orders/{mine['id']}", headers=bearer(bob_token))
    assert r.status_code == 409 and "alice-only" not in r.text


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


GARBLE = {
    "truncated-tag": lambda b: b[:-1],
    "truncated-half": lambda b: b[:len(b) // 2],
    "only-header": lambda b: b[:3],
    "empty": lambda b: b"",
    "body-bit": lambda b: _flip(b, len(b) - 20),
    "tag-bit": lambda b: _flip(b, len(b) - 1),
    "nonce-bit": lambda b: _flip(b, 3 + len(encrypted_key(b))),
    "edk-bit": lambda b: _flip(b, 40),
    "edk-key-id": lambda b: _flip(b, 5),
    "format": lambda b: b"\x02" + b[1:],
    "edk-length": lambda b: b[:1] + b"\xff\xff" + b[3:],
    "edk-length-zero": lambda b: b[:1] + b"\x00\x00" + b[3:],
    "appended": lambda b: b + b"\x00",
    "random": lambda b: os.urandom(len(b)),
}


@pytest.mark.parametrize("how", list(GARBLE), ids=list(GARBLE))
async def test_garbled_blobs_are_a_clean_409(provider, http, alice_token, how):
    created = await place(http, alice_token)
    blob = bytes((await raw_row(provider, created["id"]))["sealed"])
    await set_sealed(provider, created["id"], GARBLE[how](blob))
    r = await http.get(f"/orders/{created['id']}", headers=bearer(alice_token))
    assert r.status_code == 409, r.text
    assert ITEM not in r.text
    listed = await http.get("/orders", headers=bearer(alice_token))
    assert listed.status_code == 200 and listed.json()["orders"][0]["unreadable"] is True


async def test_disabled_key_is_503_not_500(provider, http, alice_token):
    created = await place(http, alice_token)
    op = Caller("op", provider.settings.account_id, operator=True)
    await provider.kms.call("DisableKey", {"KeyId": await provider.kms.alias(ALIAS)}, op)
    provider.kms.forget()
    fresh = await http.post("/orders", json=ORDER, headers=bearer(alice_token))
    # the app's cached data key may still seal (the cache's bounds), else 503
    assert fresh.status_code in (201, 503)
    sealer = OrderSealer(provider.kms, provider.settings.account_id)
    owner = (await raw_row(provider, created["id"]))["owner"]
    with pytest.raises(KeyUnavailable):
        await sealer.open(owner, created["id"],
                          bytes((await raw_row(provider, created["id"]))["sealed"]))
    with pytest.raises(KeyUnavailable):
        await sealer.seal(owner, "abc", {"item": "x"})


# --- the caching materials manager --------------------------------------------------------------
async def test_data_keys_reused_within_message_bound(provider):
    sealer = OrderSealer(provider.kms, provider.settings.account_id,
                         Bounds(max_age=60, max_messages=3))
    before = len(await events(provider, "GenerateDataKey"))
    blobs = [await sealer.seal("owner", f"o{i}", {"item": f"i{i}"}) for i in range(7)]
    assert len(await events(provider, "GenerateDataKey")) - before == 3  # 3 + 3 + 1
    assert len({encrypted_key(b) for b in blobs}) == 3
    # the records name the Orders key and the context, never a data key
    record = (await events(provider, "GenerateDataKey"))[-1]
    assert record["requestParameters"]["encryptionContext"] == sealer.key_context
    assert "Plaintext" not in json.dumps(record)


async def test_data_keys_reused_within_age_bound(provider):
    clock = Clock()
    sealer = OrderSealer(provider.kms, provider.settings.account_id, Bounds(max_age=10),
                         clock=clock)
    before = len(await events(provider, "GenerateDataKey"))
    await sealer.seal("o", "1", {"item": "a"})
    clock.now += 9.9
    await sealer.seal("o", "2", {"item": "a"})
    assert len(await events(provider, "GenerateDataKey")) - before == 1
    clock.now += 0.1  # age 10: at the bound, a new data key
    await sealer.seal("o", "3", {"item": "a"})
    assert len(await events(provider, "GenerateDataKey")) - before == 2


async def test_data_keys_reused_within_byte_bound(provider):
    sealer = OrderSealer(provider.kms, provider.settings.account_id,
                         Bounds(max_age=60, max_bytes=200))
    before = len(await events(provider, "GenerateDataKey"))
    for i in range(4):  # ~70-byte bodies: two fit under 200 bytes, the third does not
        await sealer.seal("o", str(i), {"item": "x" * 20})
    assert len(await events(provider, "GenerateDataKey")) - before == 2
    # a message over the byte bound bypasses the cache (a fresh data key, not kept)
    await sealer.seal("o", "big", {"item": "x" * 300})
    await sealer.seal("o", "big2", {"item": "x" * 300})
    assert len(await events(provider, "GenerateDataKey")) - before == 4


async def test_decryption_caches_data_keys_by_encrypted_key(provider):
    writer = OrderSealer(provider.kms, provider.settings.account_id)
    blobs = [await writer.seal("o", str(i), {"item": f"i{i}"}) for i in range(6)]
    assert len({encrypted_key(b) for b in blobs}) == 1
    before = len(await events(provider, "Decrypt"))
    reader = OrderSealer(provider.kms, provider.settings.account_id,
                         Bounds(max_age=60, max_messages=4))
    for i, blob in enumerate(blobs):
        assert (await reader.open("o", str(i), blob))["item"] == f"i{i}"
    assert len(await events(provider, "Decrypt")) - before == 2  # 4 uses, then 2 more
    clock = Clock()
    aged = OrderSealer(provider.kms, provider.settings.account_id, Bounds(max_age=5),
                       clock=clock)
    await aged.open("o", "0", blobs[0])
    clock.now += 5
    await aged.open("o", "1", blobs[1])
    assert len(await events(provider, "Decrypt")) - before == 4


async def test_cache_capacity_is_bounded(provider):
    sealer = OrderSealer(provider.kms, provider.settings.account_id,
                         Bounds(max_age=60, capacity=2))
    materials = await sealer.materials()
    for account in ("a", "b", "c", "d"):
        await materials.for_encryption({"bastion:account": account}, 1)
    assert len(materials._encrypt) == 2 and len(materials._decrypt) == 2


def test_bounds_are_checked():
    for bad in ({"max_age": 0}, {"max_messages": 0}, {"max_bytes": 0}, {"capacity": 0},
                {"max_messages": 2**32 + 1}):
        with pytest.raises(ValueError):
            Bounds(**bad)


# --- rotation, old rows -------------------------------------------------------------------------
async def test_rotation_keeps_old_rows_readable(provider, http, alice_token):
    old = await place(http, alice_token, item="before-rotation")
    op = Caller("op", provider.settings.account_id, operator=True)
    key_id = await provider.kms.alias(ALIAS)
    await provider.kms.call("RotateKeyOnDemand", {"KeyId": key_id}, op)
    provider.kms.forget()
    sealer = OrderSealer(provider.kms, provider.settings.account_id)  # an empty cache
    owner = (await raw_row(provider, old["id"]))["owner"]
    old_blob = bytes((await raw_row(provider, old["id"]))["sealed"])
    assert ciphertext.parse(encrypted_key(old_blob)).version == 1
    assert (await sealer.open(owner, old["id"], old_blob))["item"] == "before-rotation"
    new_blob = await sealer.seal(owner, "n1", {"item": "after"})
    assert ciphertext.parse(encrypted_key(new_blob)).version == 2
    assert (await sealer.open(owner, "n1", new_blob))["item"] == "after"


async def test_rows_from_before_sealing_are_read_then_sealed(provider, http, alice_token):
    created = await place(http, alice_token)
    owner = (await raw_row(provider, created["id"]))["owner"]
    async with provider.fast.transaction() as tx:
        await tx.run("INSERT INTO orders (id, owner, item, quantity, unit_price_cents, "
                     "status, created_at) VALUES ('a01d', :o, 'legacy-tea', 1, 5, 'placed', 1)",
                     o=owner)
    got = await http.get("/orders/a01d", headers=bearer(alice_token))
    assert got.status_code == 200 and got.json()["item"] == "legacy-tea"
    row = await raw_row(provider, "a01d")
    assert row["item"] == "" and row["sealed"] is not None
    again = await http.get("/orders/a01d", headers=bearer(alice_token))
    assert again.json() == got.json()
    statements = [e for e in await events(provider, "SqlStatement")
                  if e["requestParameters"]["command"] == "UPDATE"]
    assert statements and "legacy-tea" not in json.dumps(statements)


async def test_open_refuses_wrong_content(provider):
    sealer = OrderSealer(provider.kms, provider.settings.account_id)
    from bastion.kms.envelope import seal

    materials = await sealer.materials()
    for body in (b"not json", b"[]", b'{"item": "x"}', json.dumps(
            {"item": "", "shipping_address": None, "note": None}).encode()):
        blob = await seal(materials, body, sealer.key_context, sealer.row_context("o", "1"))
        with pytest.raises(EnvelopeError):
            await sealer.open("o", "1", blob)


# --- the cache's bounds are settings -------------------------------------------------------------
def test_bounds_come_from_the_settings(tmp_path):
    from bastion.config import Settings
    from bastion.orders.sealing import DEFAULT_BOUNDS, bounds
    from tests.conftest import make_settings

    assert bounds(make_settings(tmp_path)) == DEFAULT_BOUNDS  # the defaults are the same
    s = make_settings(tmp_path, orders_data_key_max_age=30, orders_data_key_max_messages=5,
                      orders_data_key_max_bytes=4096, orders_data_key_cache_size=7)
    assert bounds(s) == Bounds(max_age=30, max_messages=5, max_bytes=4096, capacity=7)
    for bad in ({"orders_data_key_max_age": 0}, {"orders_data_key_max_age": 86401},
                {"orders_data_key_max_messages": 0},
                {"orders_data_key_max_messages": 2**32 + 1},
                {"orders_data_key_max_bytes": 0}, {"orders_data_key_cache_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(data_dir=tmp_path, **bad)


async def test_the_served_orders_api_uses_the_settings_bounds(tmp_path, database_url):
    from bastion.app import build_app
    from bastion.runtime import open_provider
    from tests.conftest import ISSUER, _reset, make_settings

    settings = make_settings(tmp_path, database_url, orders_data_key_max_messages=2)
    await _reset(settings.effective_database_url)
    provider = await open_provider(settings)
    try:
        token = mint(provider, await add_user(provider, "carol"))
        transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            before = len(await events(provider, "GenerateDataKey"))
            for _ in range(5):
                await place(http, token)
            assert len(await events(provider, "GenerateDataKey")) - before == 3  # 2 + 2 + 1
    finally:
        await provider.close()
