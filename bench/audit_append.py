#!/usr/bin/env python3
"""Durable audit appends per second, side by side in one run:

  plain-100   plain SQLite: the same rows (same table and indexes, same bodies) inserted
              without hashing, 100 rows per WAL commit, one writer; the same pragmas as
              Bastion's writer (WAL, synchronous=NORMAL, checkpoints not on the writer)
  plain-1     plain SQLite, one commit per row
  trail       Bastion's AuditTrail: canonical body + SHA-256 chain link per record, group
              commit; C concurrent producers each awaiting durability of its own record
              (what a request does before its response leaves)
  emit        the same, plus building the record (sanitising, redaction, canonical JSON)

    .venv/bin/python bench/audit_append.py                  # 200,000 records, C=1000
    .venv/bin/python bench/audit_append.py --records 50000 --producers 200 --postgres

Prints records/s and the ratio of each to plain-100. Nothing is written outside a
temporary directory (or the bench database on PostgreSQL, dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.audit.record import build_record, canonical_bytes  # noqa: E402
from bastion.audit.trail import INSERT_SQL, AuditTrail, search_columns  # noqa: E402
from bastion.store.db import migrate_blocking  # noqa: E402
from bastion.store.fast import open_fast_store  # noqa: E402


def sample(i: int) -> dict[str, Any]:
    """A realistic record: an Orders read by a user, ~600 bytes canonical."""
    return build_record(
        "GetOrder", event_time=time.time(),
        user_identity={"type": "IAMUser", "arn": "arn:bastion:iam::000000000000:user/alice",
                       "principalId": "5f0c2a9d1e7b4c3a8d6e9f01", "userName": "alice",
                       "clientId": "orders-web"},
        source_ip="203.0.113.7", user_agent="Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
        request_parameters={"orderId": f"{i:016x}"},
        resources=[{"type": "Bastion::Orders::Order",
                    "ARN": f"arn:bastion:orders::000000000000:order/{i:016x}"}],
        request_id=f"{i:024x}")


def plain(path: str, rows: list[dict[str, Any]], per_commit: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # as Bastion's writer (it checkpoints aside)
    conn.execute("DROP TABLE IF EXISTS plain")
    conn.execute("CREATE TABLE plain AS SELECT * FROM audit_events WHERE 0")
    conn.execute("CREATE INDEX ix_plain_time ON plain (event_time)")
    conn.execute("CREATE INDEX ix_plain_actor ON plain (actor)")
    conn.execute("CREATE INDEX ix_plain_rid ON plain (request_id)")
    sql = INSERT_SQL.replace("audit_events", "plain")
    start = time.perf_counter()
    for i in range(0, len(rows), per_commit):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[i:i + per_commit])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed


async def trail_run(url: str, records: list[dict[str, Any]], producers: int, *,
                    build: bool, postgres: bool, spool: Path) -> float:
    store = await open_fast_store(url)
    trail = AuditTrail(store, postgres=postgres, spool_dir=spool, batch_max=5000)
    queue = iter(range(len(records)))
    now_ms = int(time.time() * 1000)

    async def producer() -> None:
        for i in queue:
            if build:
                await trail.emit("GetOrder", **_fields(i))
            else:
                await trail.append(records[i], event_ms=now_ms)  # as emit() passes it

    start = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    elapsed = time.perf_counter() - start
    await store.close()
    return len(records) / elapsed


def _fields(i: int) -> dict[str, Any]:
    return {"user_identity": {"type": "IAMUser", "userName": "alice",
                              "arn": "arn:bastion:iam::000000000000:user/alice"},
            "source_ip": "203.0.113.7", "request_parameters": {"orderId": f"{i:016x}"},
            "resources": [{"ARN": f"arn:bastion:orders::000000000000:order/{i:016x}"}],
            "request_id": f"{i:024x}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--producers", type=int, default=1000)
    ap.add_argument("--per-row-records", type=int, default=3000,
                    help="records for the commit-per-row baseline (it is slow)")
    ap.add_argument("--postgres", action="store_true",
                    help="also run the trail on PostgreSQL (127.0.0.1, database bench_audit)")
    args = ap.parse_args()

    records = [sample(i) for i in range(args.records)]
    rows = [search_columns(canonical_bytes(r), r) | {"seq": i + 1, "hash": bytes(32)}
            for i, r in enumerate(records)]
    size = sum(len(r["body"]) for r in rows) / len(rows)
    print(f"{args.records:,} records, {size:.0f} bytes each (canonical JSON); "
          f"{args.producers} concurrent producers; SQLite {sqlite3.sqlite_version}")
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, per_commit, subset in (("plain-100", 100, rows),
                                         ("plain-1", 1, rows[: args.per_row_records])):
            path = os.path.join(tmp, f"{name}.db")
            migrate_blocking(f"sqlite+aiosqlite:///{path}")
            results.append((name, plain(path, subset, per_commit)))
        for name, build in (("trail", False), ("emit", True)):
            path = os.path.join(tmp, f"{name}.db")
            url = f"sqlite+aiosqlite:///{path}"
            migrate_blocking(url)
            rate = asyncio.run(trail_run(url, records, args.producers, build=build,
                                         postgres=False, spool=Path(tmp, "spool")))
            results.append((f"{name} (sqlite)", rate))
    if args.postgres:
        import subprocess

        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        "DROP DATABASE IF EXISTS bench_audit", "-c",
                        "CREATE DATABASE bench_audit"], check=True, capture_output=True)
        url = "postgresql+asyncpg://postgres@127.0.0.1/bench_audit"
        migrate_blocking(url)
        with tempfile.TemporaryDirectory() as tmp:
            rate = asyncio.run(trail_run(url, records, args.producers, build=False,
                                         postgres=True, spool=Path(tmp, "spool")))
        results.append(("trail (postgres)", rate))
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        "DROP DATABASE bench_audit"], check=True, capture_output=True)
    base = results[0][1]
    print(f"{'run':20} {'records/s':>12} {'vs plain-100':>13}")
    for name, rate in results:
        print(f"{name:20} {rate:12,.0f} {rate / base:12.2f}x")


if __name__ == "__main__":
    main()
