"""The append-only trail: group commit, hash chain, spool, fail-closed.

Every ``emit``/``append`` returns only once its record is durable (committed, or fsynced to
the spool): callers await it before their response leaves, so an answered request's record
survives a ``kill -9``. Records waiting while one batch commits go together in the next one
(group commit): one transaction, one ``executemany``, however many requests wait.

One sequence for every writer: a batch takes the database's write lock first (SQLite
``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped advisory lock), reads the last
``(seq, hash)`` and links its records after it. Instances sharing a PostgreSQL database,
and the CLI next to a server on SQLite, therefore extend one chain that ``verify`` walks
end to end; no per-instance chains to reconcile.

When the database cannot be written: ``fail_closed`` raises ``AuditUnavailable`` to every
waiter (the edge answers 503); ``spool`` appends the canonical bodies to an fsynced file and
answers; the spool is moved into the trail, in order and before anything newer, once the
database is back. A record is never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from bastion.audit.chain import GENESIS, link
from bastion.audit.context import current_request
from bastion.audit.record import build_record, canonical_bytes
from bastion.store.fast import FastStore, Tx

log = logging.getLogger("bastion.audit")

FailureMode = Literal["fail_closed", "spool"]
ADVISORY_LOCK = 0x6261_7374  # "bast": serialises appends across PostgreSQL instances

INSERT_SQL = ("INSERT INTO audit_events (seq, event_time, event_name, actor, resource, "
              "outcome, request_id, body, hash) VALUES (:seq, :event_time, :event_name, "
              ":actor, :resource, :outcome, :request_id, :body, :hash)")
LAST_SQL = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
ARCHIVED_SQL = "SELECT last_seq, last_hash FROM audit_archives ORDER BY last_seq DESC LIMIT 1"


class AuditUnavailable(Exception):
    """The trail could not record an event and the policy is ``fail_closed``."""


def _text(value: Any, limit: int) -> str | None:
    """A search column: printable ASCII only (escaped like the body), so no NUL, lone
    surrogate or control character can break the insert or forge a line."""
    if value is None or value == "":
        return None
    text = str(value)
    if not (text.isascii() and text.isprintable()):
        text = json.dumps(text, ensure_ascii=True)[1:-1]
    return text[:limit]


def search_columns(body: bytes, record: Mapping[str, Any],
                   event_ms: int | None = None) -> dict[str, Any]:
    """Search columns copied from the record. They are outside the hash, so verify checks
    each against the body (``notary.check_row``). Total: any JSON object gives columns (a
    field of an unexpected type gives NULL), so verify can name a stored body of any shape."""
    ident = record.get("userIdentity")
    if not isinstance(ident, Mapping):
        ident = {}
    actor = ident.get("arn") or ident.get("userName") or ident.get("principalId")
    resources = record.get("resources")
    first = resources[0] if isinstance(resources, list) and resources else None
    resource = first.get("ARN") if isinstance(first, Mapping) else None
    return {"event_time": event_ms if event_ms is not None else _parse_ms(record),
            "event_name": _text(record.get("eventName"), 64) or "",
            "actor": _text(actor, 512),
            "resource": _text(resource, 512),
            "outcome": "failure" if record.get("errorCode") else "success",
            "request_id": _text(record.get("requestID"), 64),
            "body": body}




def _parse_ms(record: Mapping[str, Any]) -> int:
    text = str(record.get("eventTime", ""))
    try:
        return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return int(time.time() * 1000)


def _whole(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class _Spool:
    """Canonical bodies, one per line, fsynced before the waiter is answered."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "spool.jsonl"
        self.draining = directory / "spool.draining.jsonl"

    def pending(self) -> bool:
        return self.path.exists() or self.draining.exists()

    def write(self, bodies: list[bytes]) -> None:
        """Append and fsync; raises OSError unless every byte is on disk. A line left torn
        by an earlier failure is ended first, so it cannot swallow these records."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            data = b"".join(b + b"\n" for b in bodies)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def take(self) -> list[bytes]:
        """The spooled bodies, oldest first, without duplicates. Newly spooled lines are
        appended to the file being drained, so order holds across failed attempts."""
        if self.path.exists():
            with open(self.draining, "ab") as out:
                out.write(b"\n" + self.path.read_bytes())  # blank lines are skipped
                out.flush()
                os.fsync(out.fileno())
            self.path.unlink()
        if not self.draining.exists():
            return []
        seen: set[bytes] = set()
        bodies, torn = [], []
        for line in self.draining.read_bytes().split(b"\n"):
            if not line or line in seen:
                continue
            seen.add(line)
            if _whole(line):
                bodies.append(line)
            else:  # a write that failed half-way: its waiter got a 503, nothing was promised
                torn.append(line)
        if torn:
            with open(self.directory / "spool.torn", "ab") as out:
                out.write(b"".join(t + b"\n" for t in torn))
            log.error("audit spool: %d torn line(s) set aside in %s", len(torn),
                      self.directory / "spool.torn")
        return bodies

    def done(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.draining.unlink()


class AuditTrail:
    def __init__(self, store: FastStore, *, postgres: bool, spool_dir: Path,
                 failure_mode: FailureMode = "fail_closed", batch_max: int = 5000) -> None:
        self.store = store
        self.postgres = postgres
        self.failure_mode = failure_mode
        self.batch_max = batch_max
        self.spool = _Spool(spool_dir)
        # whether a spool may exist: checked on disk at start and by drain_spool, set when
        # this process spools; keeps two stat calls off every batch
        self._spooled = self.spool.pending()
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.appended = 0  # records committed by this process (checkpoint trigger)
        self.spooled = 0  # records this process spooled because the database failed
        self.lost = 0  # records neither written nor spooled (each waiter got the error)
        # metrics hooks (edge/metrics.py): each built record, each group commit's seconds
        self.observers: list[Callable[[Mapping[str, Any]], None]] = []
        self.commit_observers: list[Callable[[float], None]] = []

    @property
    def queued(self) -> int:
        """Records waiting for the next group commit."""
        return len(self._pending)

    # --- recording ----------------------------------------------------------------------
    async def emit(self, event_name: str, **fields: Any) -> dict[str, Any]:
        """Build a record for ``event_name`` (request id, source IP, user agent from the
        current request unless given) and append it durably. Returns the record."""
        record, event_ms, body = self._build(event_name, fields)
        await self._enqueue(record, event_ms, body)
        return record

    async def emit_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Several records of one request, committed together (one wait, not one each)."""
        futures = [self._enqueue(*self._build(name, fields)) for name, fields in events]
        await asyncio.gather(*futures)

    def _build(self, event_name: str, fields: dict[str, Any]
               ) -> tuple[dict[str, Any], int, bytes]:
        req = current_request.get()
        if req is not None:
            fields.setdefault("request_id", req.request_id)
            fields.setdefault("source_ip", req.source_ip)
            fields.setdefault("user_agent", req.user_agent)
        fields.setdefault("event_time", time.time())
        body: list[bytes] = []
        record = build_record(event_name, **fields, body_out=body)
        for observe in self.observers:
            observe(record)
        # the same rounding as the record's eventTime, so --since <eventTime> finds it
        return record, int(round(fields["event_time"] * 1000)), body[0]

    async def append(self, record: Mapping[str, Any], *, event_ms: int | None = None) -> None:
        # a cancelled waiter (client gone) cancels only its wait: the record is queued and
        # is written; the flusher skips futures that are already done
        await self._enqueue(record, event_ms)

    def _enqueue(self, record: Mapping[str, Any], event_ms: int | None,
                 body: bytes | None = None) -> asyncio.Future[None]:
        if body is None:
            body = canonical_bytes(record)
        row = search_columns(body, record, event_ms)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        return fut

    async def flush(self) -> None:
        """Wait until every record appended so far is written (or spooled)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_loop(self) -> None:
        await asyncio.sleep(0)  # one loop turn: requests already in flight join this batch
        while self._pending:
            batch = self._pending[: self.batch_max]
            del self._pending[: len(batch)]
            try:
                await self._commit([r for r, _ in batch])
            except Exception as exc:  # retried one by one: one bad row must not fail the rest
                if len(batch) > 1 and await self._one_by_one(*batch[0]):
                    for row, fut in batch[1:]:
                        await self._one_by_one(row, fut)
                else:  # even one row fails: the database is unwritable, for all of them
                    rest = batch[1:] if len(batch) > 1 else batch
                    self._settle(rest, self._fallback([r for r, _ in rest], exc))
                continue
            self._settle(batch, None)

    async def _one_by_one(self, row: dict[str, Any], fut: asyncio.Future[None]) -> bool:
        try:
            await self._commit([row])
        except Exception as exc:  # this row cannot be written: apply the policy
            self._settle([(row, fut)], self._fallback([row], exc))
            return False
        self._settle([(row, fut)], None)
        return True

    @staticmethod
    def _settle(batch: list[tuple[dict[str, Any], asyncio.Future[None]]],
                outcome: Exception | None) -> None:
        for _, fut in batch:
            if not fut.done():
                if outcome is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(outcome)

    def _fallback(self, rows: list[dict[str, Any]], exc: Exception) -> Exception | None:
        if self.failure_mode == "spool":
            try:
                self.spool.write([r["body"] for r in rows])
                self._spooled = True
                self.spooled += len(rows)
                log.error("audit trail unwritable (%s): %d records spooled to %s",
                          type(exc).__name__, len(rows), self.spool.path)
                return None
            except OSError as spool_exc:
                log.critical("audit spool unwritable too (%s)", spool_exc)
        else:
            log.critical("audit trail unwritable (%s): failing closed", type(exc).__name__)
        self.lost += len(rows)
        return AuditUnavailable("the audit trail is unavailable")

    async def close(self) -> None:
        """The final flush at shutdown. Records that could not be committed are spooled or
        lost according to the failure mode; either is logged at error level with the count,
        and a loss raises ``AuditUnavailable`` (nobody is left to answer 503 to)."""
        spooled, lost, queued = self.spooled, self.lost, len(self._pending)
        await self.flush()
        spooled, lost = self.spooled - spooled, self.lost - lost
        if spooled:
            log.error("audit: final flush at shutdown: the database refused %d record(s); "
                      "they are spooled in %s and move into the trail at the next start",
                      spooled, self.spool.path)
        if lost:
            log.error("audit: final flush at shutdown: %d of %d queued record(s) could not "
                      "be written or spooled (failure mode %s) and are LOST", lost, queued,
                      self.failure_mode)
            raise AuditUnavailable(f"{lost} audit record(s) could not be written at shutdown")

    async def _commit(self, rows: list[dict[str, Any]]) -> None:
        start = time.perf_counter()
        async with self._lock:
            await self._commit_locked(rows)
        for observe in self.commit_observers:
            observe(time.perf_counter() - start)

    async def _commit_locked(self, rows: list[dict[str, Any]]) -> None:
        had_spool = self._spooled and self.spool.pending()
        spooled = self.spool.take() if had_spool else []
        if rows or spooled:
            async with self.store.transaction() as tx:
                if spooled:
                    spooled = await _not_yet_written(tx, spooled)
                    rows = [search_columns(b, json.loads(b)) for b in spooled] + rows
                await self._link_and_insert(tx, rows)
        if had_spool:
            self.spool.done()
            log.warning("audit spool drained: %d records moved into the trail", len(spooled))
        # spooling happens only in the flush task, never during this one's commit, except
        # when this is drain_spool's commit: then look again
        self._spooled = had_spool and self.spool.pending()

    async def _link_and_insert(self, tx: Tx, rows: list[dict[str, Any]]) -> None:
        """Chain ``rows`` after the newest record, under the write lock, and insert them."""
        if self.postgres:
            await tx.one("SELECT pg_advisory_xact_lock(:k)", k=ADVISORY_LOCK)
        seq, prev = await last_link(tx)
        for row in rows:
            seq += 1
            prev = link(prev, row["body"])
            row["seq"], row["hash"] = seq, prev
        await tx.many(INSERT_SQL, rows)
        self.appended += len(rows)

    async def record_in(self, tx: Tx, event_name: str, **fields: Any) -> None:
        """Record inside the caller's write transaction: the change and its record commit
        together or not at all (for state changes; decisions use ``emit``). The caller's
        transaction must come from this trail's store."""
        record, event_ms, body = self._build(event_name, fields)
        row = search_columns(body, record, event_ms)
        try:
            await self._link_and_insert(tx, [row])
        except Exception as exc:  # the whole change rolls back with it: fail closed
            log.critical("audit trail unwritable (%s): change refused", type(exc).__name__)
            raise AuditUnavailable("the audit trail is unavailable") from exc

    async def drain_spool(self) -> None:
        """Move spooled records into the trail (a background retry)."""
        if not self.spool.pending():  # also finds what another process spooled
            return
        self._spooled = True
        try:
            await self._commit([])
        except Exception as exc:  # still down: the spool stays for the next try
            log.info("audit spool not drained yet: %s", type(exc).__name__)


async def last_link(tx: Tx) -> tuple[int, bytes]:
    """``(seq, hash)`` of the newest record, the last archived one if all were archived, or
    ``(0, GENESIS)``."""
    row = await tx.one(LAST_SQL) or await tx.one(ARCHIVED_SQL)
    if row is None:
        return 0, GENESIS
    return int(row[0]), bytes(row[1])


async def _not_yet_written(tx: Tx, spooled: list[bytes]) -> list[bytes]:
    """After a crash between commit and removing the drained spool file, its records are
    already in the trail: skip those (matched by body, which carries a unique eventID)."""
    first = await tx.one("SELECT seq FROM audit_events WHERE body = :b", b=spooled[0])
    if first is None:
        return spooled
    written = {bytes(r[0]) for r in await tx.all(
        "SELECT body FROM audit_events WHERE seq >= :s ORDER BY seq LIMIT :n",
        s=first[0], n=len(spooled) * 2 + 1000)}
    return [b for b in spooled if b not in written]
