"""Tampering with the stored trail, on SQLite and PostgreSQL: someone with raw database access
turns the append-only triggers off, edits, deletes, inserts or reorders rows, and
``Notary.verify`` names the first record at fault and what was done to it (``chain.py`` and
``docs/audit.md`` give the attack-by-attack reasoning this checks end to end).

The trail under attack holds records 1..60 (the first few are the IAM bootstrap's) with a
signed checkpoint stored at tree size 40. Tampering goes through a separate connection, the
way an attacker would, never through Bastion's own store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bastion.audit.chain import GENESIS, link
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.notary import kept_checkpoint
from bastion.audit.record import build_record, canonical_bytes
from bastion.config import Settings

pytestmark = pytest.mark.anyio

TOTAL = 60  # records in the trail under attack
SIGNED = 40  # tree size of the checkpoint stored in the database


# --- a connection of the attacker's own -------------------------------------------------

def sqlite_path(settings: Settings) -> Path | None:
    url = settings.effective_database_url
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite") else None


class Raw:
    """Statements on a separate connection, ``?`` placeholders on both databases."""

    def __init__(self, sqlite: sqlite3.Connection | None, pg: asyncpg.Connection | None):
        self._sqlite = sqlite
        self._pg = pg

    @staticmethod
    def _numbered(sql: str) -> str:
        count = iter(range(1, 1000))
        return re.sub(r"\?", lambda _m: f"${next(count)}", sql)

    async def run(self, sql: str, *args: Any) -> None:
        if self._sqlite is not None:
            self._sqlite.execute(sql, args)
        else:
            assert self._pg is not None
            await self._pg.execute(self._numbered(sql), *args)

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            return [tuple(r) for r in self._sqlite.execute(sql, args).fetchall()]
        assert self._pg is not None
        return [tuple(r) for r in await self._pg.fetch(self._numbered(sql), *args)]

    async def one(self, sql: str, *args: Any) -> tuple[Any, ...]:
        [row] = await self.rows(sql, *args)
        return row


@contextlib.asynccontextmanager
async def raw_connection(settings: Settings) -> AsyncIterator[Raw]:
    """A plain connection (triggers on), committed on exit."""
    path = sqlite_path(settings)
    if path is not None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield Raw(conn, None)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    pg = await asyncpg.connect(settings.effective_database_url.replace("+asyncpg", ""))
    try:
        async with pg.transaction():
            yield Raw(None, pg)
    finally:
        await pg.close()


@contextlib.asynccontextmanager
async def tampering(settings: Settings) -> AsyncIterator[Raw]:
    """A connection with the append-only triggers out of the way, committed on exit. SQLite:
    the triggers are dropped and put back in the same transaction (nothing shows afterwards);
    PostgreSQL: ``session_replication_role = replica`` skips them for this session only."""
    path = sqlite_path(settings)
    if path is None:
        async with raw_connection(settings) as raw:
            await raw.run("SET LOCAL session_replication_role = replica")
            yield raw
        return
    async with raw_connection(settings) as raw:
        triggers = await raw.rows(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN "
            "('audit_events', 'audit_checkpoints', 'audit_signing_keys', 'audit_archives')")
        # UPDATE and DELETE on each; INSERT too on audit_archives (signed and contiguous)
        # and audit_events (after the last record)
        assert len(triggers) == 10, triggers
        for name, _sql in triggers:
            await raw.run(f'DROP TRIGGER "{name}"')
        yield raw
        for _name, sql in triggers:
            await raw.run(sql)


# --- the trail under attack ---------------------------------------------------------------

async def last_seq(provider: Any) -> int:
    row = await provider.fast.one("SELECT MAX(seq) FROM audit_events")
    return int(row[0] or 0)


async def fill(provider: Any, upto: int) -> None:
    """Emit GetOrder records (concurrently: one group commit) until the trail ends at
    ``upto``; the record at seq n has orderId n."""
    start = await last_seq(provider) + 1
    assert start <= upto, "the IAM bootstrap wrote more records than expected"
    await asyncio.gather(*(provider.audit.emit("GetOrder", request_id=f"req-{seq}",
                                               request_parameters={"orderId": str(seq)})
                           for seq in range(start, upto + 1)))
    await provider.audit.flush()
    assert await last_seq(provider) == upto


@pytest.fixture
async def signed(provider: Any) -> Checkpoint:
    """Records 1..60, the checkpoint at 40 stored by the notary."""
    await fill(provider, SIGNED)
    cp = await provider.notary.checkpoint()
    assert cp is not None and cp.tree_size == SIGNED
    await fill(provider, TOTAL)
    return cp


async def row(raw: Raw, seq: int) -> tuple[bytes, bytes]:
    body, h = await raw.one("SELECT body, hash FROM audit_events WHERE seq = ?", seq)
    return bytes(body), bytes(h)


async def prev_hash(raw: Raw, seq: int) -> bytes:
    return GENESIS if seq == 1 else (await row(raw, seq - 1))[1]


async def set_row(raw: Raw, seq: int, body: bytes, h: bytes) -> None:
    await raw.run("UPDATE audit_events SET body = ?, hash = ? WHERE seq = ?", body, h, seq)


def edited(body: bytes) -> bytes:
    """One byte changed: the first hex digit of the eventID (any record has one)."""
    at = body.index(b'"eventID":"') + len(b'"eventID":"')
    out = body[:at] + (b"0" if body[at:at + 1] != b"0" else b"1") + body[at + 1:]
    assert out != body and len(out) == len(body)
    return out


async def edit(raw: Raw, seq: int, *, rehash: bool = False) -> None:
    body, h = await row(raw, seq)
    body = edited(body)
    await set_row(raw, seq, body, link(await prev_hash(raw, seq), body) if rehash else h)


async def delete(raw: Raw, *seqs: int) -> None:
    for seq in seqs:
        await raw.run("DELETE FROM audit_events WHERE seq = ?", seq)


async def shift(raw: Raw, after: int, by: int) -> None:
    """Renumber every record after ``after`` by ``by`` (in two steps: seq is the key)."""
    await raw.run("UPDATE audit_events SET seq = -seq WHERE seq > ?", after)
    await raw.run("UPDATE audit_events SET seq = -seq + ? WHERE seq < 0", by)


FORGED = canonical_bytes(build_record("CreateUser", event_time=1_700_000_000,
                                      request_id="forged",
                                      request_parameters={"userName": "mallory"}))


async def insert_forged(raw: Raw, seq: int, *, fresh_hash: bool) -> None:
    """A forged record at ``seq``, the real ones from there on pushed up by one."""
    await shift(raw, seq - 1, 1)
    h = link(await prev_hash(raw, seq), FORGED) if fresh_hash else bytes(32)
    await raw.run("INSERT INTO audit_events (seq, event_time, event_name, actor, resource, "
                  "outcome, request_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  seq, 1_700_000_000_000, "CreateUser", None, None, "success", "forged",
                  FORGED, h)


async def swap(raw: Raw, a: int, b: int) -> None:
    """Exchange two records' bodies and hashes (each keeps its seq)."""
    row_a, row_b = await row(raw, a), await row(raw, b)
    await set_row(raw, a, *row_b)
    await set_row(raw, b, *row_a)


async def _delete_renumber(raw: Raw, seq: int) -> None:
    await delete(raw, seq)
    await shift(raw, seq, -1)


Attack = Callable[[Raw], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    attack: Attack
    seq: int
    kind: str
    candidates: tuple[int, ...] | None = None  # checked when the evidence is ambiguous


CASES: dict[str, Case] = {
    # body edited, hash left: the checkpoint at 40 confirms the stored hashes
    "edit-body": Case(lambda r: edit(r, 20), 20, "modified"),
    "edit-first-body": Case(lambda r: edit(r, 1), 1, "modified"),
    # no later checkpoint to tell an edited body from a rewritten predecessor: both named
    "edit-body-after-last-checkpoint": Case(lambda r: edit(r, 50), 50, "modified", (49, 50)),
    # body edited and its hash recomputed: the next link breaks, the root at 40 differs
    "edit-body-recompute-hash": Case(lambda r: edit(r, 20, rehash=True), 20, "modified"),
    "edit-body-recompute-hash-at-checkpoint": Case(lambda r: edit(r, SIGNED, rehash=True),
                                                   SIGNED, "modified"),
    "edit-body-recompute-hash-after-last-checkpoint": Case(
        lambda r: edit(r, 50, rehash=True), 51, "modified", (50, 51)),
    "delete-middle": Case(lambda r: delete(r, 20), 20, "deleted"),
    "delete-first": Case(lambda r: delete(r, 1), 1, "deleted"),
    "delete-several-after-checkpoint": Case(lambda r: delete(r, 45, 46, 47), 45, "deleted"),
    # renumbered over the gap: the checkpoint's last hash turns up one position early
    "delete-middle-and-renumber": Case(lambda r: _delete_renumber(r, 20), 20, "deleted"),
    "insert-forged-fresh-hash": Case(lambda r: insert_forged(r, 21, fresh_hash=True), 21,
                                     "inserted"),
    "insert-forged-fresh-hash-after-checkpoint": Case(
        lambda r: insert_forged(r, 51, fresh_hash=True), 51, "inserted"),
    "insert-forged-junk-hash": Case(lambda r: insert_forged(r, 21, fresh_hash=False), 21,
                                    "inserted"),
    "swap-adjacent": Case(lambda r: swap(r, 20, 21), 20, "reordered"),
    "swap-distant": Case(lambda r: swap(r, 15, 25), 15, "reordered"),
    "swap-across-checkpoint": Case(lambda r: swap(r, 39, 41), 39, "reordered"),
}


def fault_of(report: Any) -> tuple[int, str]:
    assert not report.ok
    assert len(report.faults) == 1, report.faults
    return report.faults[0].seq, report.faults[0].kind


# --- the untampered trail -----------------------------------------------------------------

async def test_untampered_trail_verifies(provider, signed):
    report = await provider.notary.verify()
    assert report.ok and report.faults == ()
    assert (report.records, report.last_seq) == (TOTAL, TOTAL)
    assert report.checkpoints_verified >= 1
    assert report.tree_size == TOTAL and report.root_hash is not None
    rows = await provider.fast.all("SELECT seq, body FROM audit_events WHERE event_name = "
                                   "'GetOrder' ORDER BY seq")
    # group commit keeps the order in which records were emitted
    assert all(json.loads(bytes(b))["requestParameters"]["orderId"] == str(s)
               for s, b in rows)


async def test_kept_checkpoint_round_trips_through_a_file(provider, signed, tmp_path):
    kept = tmp_path / "elsewhere" / "checkpoint.json"
    kept.parent.mkdir()
    kept.write_text(signed.to_json() + "\n")
    report = await provider.notary.verify(kept=[kept_checkpoint(json.loads(kept.read_text()))])
    assert report.ok and report.checkpoints_verified == 2  # the stored one and the kept one


REFUSED = {
    "update-body": "UPDATE audit_events SET body = :b WHERE seq = 20",
    "renumber": "UPDATE audit_events SET seq = seq + 1000 WHERE seq = 60",
    "delete-middle": "DELETE FROM audit_events WHERE seq = 20",
    "delete-last": "DELETE FROM audit_events WHERE seq = 60",
    "delete-all": "DELETE FROM audit_events",
}


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
async def test_triggers_refuse_update_and_delete(provider, signed, sql):
    params = {"b": b"x"} if ":b" in sql else {}
    with pytest.raises(Exception, match="append-only"):
        async with provider.fast.transaction() as tx:
            await tx.run(sql, **params)
    # a separate plain connection is refused just the same
    with pytest.raises(Exception, match="append-only"):
        async with raw_connection(provider.settings) as raw:
            await raw.run(sql.replace(":b", "?"), *params.values())
    report = await provider.notary.verify()
    assert report.ok and report.records == TOTAL


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_refuses_truncate(provider, signed):
    """SQLite has no TRUNCATE (its ``DELETE FROM`` without WHERE is refused above)."""
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        async with raw_connection(provider.settings) as raw:
            await raw.run("TRUNCATE audit_events")


async def test_stored_checkpoints_cannot_be_updated(provider, signed):
    with pytest.raises((sqlite3.IntegrityError, asyncpg.PostgresError)):
        async with provider.fast.transaction() as tx:
            await tx.run("UPDATE audit_checkpoints SET document = :d", d="{}")
    assert await provider.notary.checkpoints() == [signed]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_checkpoint_update_names_the_append_only_rule(provider, signed):
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        async with raw_connection(provider.settings) as raw:
            await raw.run("UPDATE audit_checkpoints SET document = ?", "{}")


# --- one attack per case ----------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_tampering_is_pinpointed(provider, signed, case: Case):
    async with tampering(provider.settings) as raw:
        await case.attack(raw)
    report = await provider.notary.verify()
    assert fault_of(report) == (case.seq, case.kind), report.faults[0].detail
    if case.candidates is not None:
        assert report.faults[0].candidates == case.candidates
    # the fault is reported whatever the trail is verified against
    again = await provider.notary.verify(kept=[signed])
    assert fault_of(again) == (case.seq, case.kind)


async def test_tampered_trail_is_still_written_after_the_fault(provider, signed):
    """Appends go on after tampering (the writer links to the stored tail); the fault stays
    named at its record."""
    async with tampering(provider.settings) as raw:
        await edit(raw, 20)
    await fill(provider, TOTAL + 10)
    assert fault_of(await provider.notary.verify()) == (20, "modified")


# --- the tail: what only a checkpoint kept elsewhere reveals ------------------------------

async def test_truncated_tail(provider, signed, tmp_path):
    """The last five records deleted. A checkpoint over all 60 reveals it while it is
    stored; an attacker who also deletes the stored checkpoints leaves a trail that verifies
    (the chain is consistent up to seq 55) and only the copy kept elsewhere still shows the
    cut. That is why checkpoints are exported and kept off the box."""
    latest = await provider.notary.checkpoint()
    assert latest is not None and latest.tree_size == TOTAL
    kept_file = tmp_path / "kept.json"
    kept_file.write_text(latest.to_json())
    kept = kept_checkpoint(json.loads(kept_file.read_text()))

    async with tampering(provider.settings) as raw:
        await delete(raw, *range(TOTAL - 4, TOTAL + 1))
    assert fault_of(await provider.notary.verify()) == (56, "truncated")
    assert fault_of(await provider.notary.verify(kept=[kept])) == (56, "truncated")

    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_checkpoints WHERE tree_size > ?", TOTAL - 5)
    blind = await provider.notary.verify()
    assert blind.ok and blind.records == TOTAL - 5
    assert blind.checkpoints_verified == 1  # the one at 40, which the cut left alone
    assert fault_of(await provider.notary.verify(kept=[kept])) == (56, "truncated")


async def _append_forged(raw: Raw, seq: int) -> None:
    await raw.run("INSERT INTO audit_events (seq, event_time, event_name, actor, resource, "
                  "outcome, request_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  seq, 1_700_000_000_000, "CreateUser", None, None, "success", "forged",
                  FORGED, link(await prev_hash(raw, seq), FORGED))


@pytest.mark.parametrize(("attack", "with_kept"), [
    (lambda r: delete(r, TOTAL), (TOTAL, "truncated")),
    (lambda r: edit(r, TOTAL, rehash=True), (TOTAL, "checkpoint_mismatch")),
    (lambda r: _append_forged(r, TOTAL + 1), None),
], ids=["delete-last", "rewrite-last-recompute-hash", "append-forged"])
async def test_tail_after_the_last_stored_checkpoint(provider, signed, attack, with_kept):
    """Changes after the last stored checkpoint that leave a consistent chain verify ok:
    records newer than the latest checkpoint are as good as the database (docs/audit.md,
    Limits). A later checkpoint kept elsewhere reveals a deleted or rewritten tail; a record
    appended after it is indistinguishable from a real one."""
    latest = await provider.notary.checkpoint()
    assert latest is not None and latest.tree_size == TOTAL
    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_checkpoints WHERE tree_size = ?", TOTAL)
        await attack(raw)
    assert (await provider.notary.verify()).ok
    seen = await provider.notary.verify(kept=[latest])
    if with_kept is None:
        assert seen.ok
    else:
        assert fault_of(seen) == with_kept


# --- the stored checkpoints -----------------------------------------------------------------

async def edit_document(raw: Raw, tree_size: int, change: Callable[[dict[str, Any]], None]
                        ) -> None:
    (text,) = await raw.one("SELECT document FROM audit_checkpoints WHERE tree_size = ?",
                            tree_size)
    doc = json.loads(text)
    change(doc)
    await raw.run("UPDATE audit_checkpoints SET document = ? WHERE tree_size = ?",
                  json.dumps(doc, sort_keys=True), tree_size)


def _flip(hex_digest: str) -> str:
    return ("0" if hex_digest[0] != "0" else "1") + hex_digest[1:]


def _set(field: str, fn: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        cp = json.loads(doc["checkpoint"]) if isinstance(doc["checkpoint"], str) \
            else doc["checkpoint"]
        cp[field] = fn(cp[field])
        doc["checkpoint"] = json.dumps(cp, sort_keys=True, separators=(",", ":")) \
            if isinstance(doc["checkpoint"], str) else cp
    return change


DOCUMENT_EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], int]] = {
    # (change to the stored document, seq of the fault: the tree size it now claims)
    "root-hash": (_set("root_hash", _flip), SIGNED),
    "last-hash": (_set("last_hash", _flip), SIGNED),
    "signature": (_set("signature", _flip), SIGNED),
    "timestamp": (_set("timestamp", lambda t: t + 1), SIGNED),
    "tree-size": (_set("tree_size", lambda n: n - 1), SIGNED - 1),
    "unknown-key": (_set("key_id", lambda _k: "audit-mallory"), SIGNED),
}


@pytest.mark.parametrize(("change", "seq"), DOCUMENT_EDITS.values(),
                         ids=DOCUMENT_EDITS.keys())
async def test_edited_checkpoint_document_is_a_bad_signature(provider, signed, change, seq):
    async with tampering(provider.settings) as raw:
        await edit_document(raw, SIGNED, change)
    assert fault_of(await provider.notary.verify()) == (seq, "bad_signature")
    # the kept copy still vouches for the untouched trail
    report = await provider.notary.verify(kept=[signed])
    assert fault_of(report) == (seq, "bad_signature")


async def test_replaced_public_key_is_a_bad_signature(provider, signed):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    async with tampering(provider.settings) as raw:
        await raw.run("UPDATE audit_signing_keys SET public_key = ?", other)
    assert fault_of(await provider.notary.verify()) == (SIGNED, "bad_signature")


async def test_edited_frontier_makes_the_next_checkpoint_mismatch(provider, signed):
    """The frontier stored next to a checkpoint is not signed; the notary continues the tree
    from it. Corrupting it makes the next checkpoint's root wrong, which verify catches."""
    def corrupt(doc: dict[str, Any]) -> None:
        doc["frontier"][0] = _flip(doc["frontier"][0])

    async with tampering(provider.settings) as raw:
        await edit_document(raw, SIGNED, corrupt)
    cp = await provider.notary.checkpoint()
    assert cp is not None and cp.tree_size == TOTAL
    report = await provider.notary.verify()
    assert fault_of(report) == (TOTAL, "checkpoint_mismatch"), report.faults[0].detail


async def test_deleted_checkpoint_between_two_is_noticed_by_the_next_one(provider, signed):
    """Stored checkpoints are not append-only against DELETE; what a deletion hides is only
    what the deleted checkpoint alone covered (the later one still covers everything)."""
    latest = await provider.notary.checkpoint()
    assert latest is not None
    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_checkpoints WHERE tree_size = ?", SIGNED)
        await edit(raw, 20)
    assert fault_of(await provider.notary.verify()) == (20, "modified")


# --- a checkpoint signed after the tampering ------------------------------------------------

@pytest.mark.parametrize("attack", [
    lambda r: edit(r, 50, rehash=True),
    lambda r: _delete_renumber(r, 50),
], ids=["edit-body-recompute-hash", "delete-and-renumber"])
async def test_checkpoint_signed_after_tampering_keeps_the_verdict(provider, signed, attack):
    async with tampering(provider.settings) as raw:
        await attack(raw)
    before = (await provider.notary.verify()).faults[0]
    await provider.notary.checkpoint()  # what audit_housekeeping does on its own
    after = (await provider.notary.verify()).faults[0]
    assert (after.seq, after.kind, after.candidates) == \
        (before.seq, before.kind, before.candidates)
