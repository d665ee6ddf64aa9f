"""Attacks on the tamper-evident audit trail by someone with write access to the database
(SQLite file or PostgreSQL) but not the key-encryption key file (docs/audit.md, "What is
guaranteed"): delete, rewrite, reorder or hide records, from ``bastion audit verify`` or from
``bastion audit search``, while verify still says ok, or make verify crash instead of naming
the fault.

Each test is named after the attack and passes when verify names the fault (or the database
refuses). Attacks that succeeded when written were marked ``xfail(strict=True)``; once fixed,
the marker goes and the bug stays in the test's docstring. The assertions are the secure
behaviour.

The trail under attack is test_tamper's: records 1..60 (GetOrder records with request ids
``req-<seq>`` after the IAM bootstrap's), a signed checkpoint stored at 40.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastion.audit.archive import archive
from bastion.audit.chain import GENESIS, link
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.merkle import CompactRange
from bastion.audit.notary import Notary
from bastion.audit.trail import search_columns
from bastion.config import Settings
from tests.audit.test_archive_tamper import leaves
from tests.audit.test_cli_audit import audit_cli
from tests.audit.test_tamper import (
    FORGED,
    SIGNED,
    TOTAL,
    Raw,
    fault_of,
    fill,
    prev_hash,
    raw_connection,
    row,
    sqlite_path,
    tampering,
)
from tests.live import BASTION

pytestmark = pytest.mark.anyio



def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


async def insert_row(raw: Raw, seq: int, body: bytes, h: bytes) -> None:
    """A row with search columns that agree with ``body`` (the strongest forgery)."""
    cols = search_columns(body, json.loads(body))
    await raw.run("INSERT INTO audit_events (seq, event_time, event_name, actor, resource, "
                  "outcome, request_id, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  seq, cols["event_time"], cols["event_name"], cols["actor"],
                  cols["resource"], cols["outcome"], cols["request_id"], body, h)


async def rechain(raw: Raw, first: int, last: int, change: Any) -> None:
    """Rewrite records ``first..last`` with ``change(record)`` and recompute every hash from
    ``first`` on, so the chain is consistent again (search columns rewritten to agree)."""
    prev = await prev_hash(raw, first)
    for seq in range(first, last + 1):
        body, _h = await row(raw, seq)
        record = json.loads(body)
        if seq == first:
            change(record)
        body = canonical(record)
        h = link(prev, body)
        cols = search_columns(body, record)
        await raw.run("UPDATE audit_events SET body = ?, hash = ?, event_time = ?, "
                      "event_name = ?, actor = ?, resource = ?, outcome = ?, request_id = ? "
                      "WHERE seq = ?", body, h, cols["event_time"], cols["event_name"],
                      cols["actor"], cols["resource"], cols["outcome"], cols["request_id"],
                      seq)
        prev = h


def search_cli(settings: Settings, *args: str) -> list[dict[str, Any]]:
    result = audit_cli(settings, "search", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def kept_file(tmp_path: Path, cp: Checkpoint) -> Path:
    path = tmp_path / "offsite" / f"cp-{cp.tree_size}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(cp.to_json() + "\n")
    return path


# --- reorder: the seqs of two records exchanged (search columns travel with them) -------------

async def test_swap_two_records_seq_numbers(provider, signed):
    """The rows keep body, hash and search columns; only their seq values are exchanged, so
    no search column disagrees with its body: only the chain can see it."""
    async with tampering(provider.settings) as raw:
        await raw.run("UPDATE audit_events SET seq = -1 WHERE seq = 20")
        await raw.run("UPDATE audit_events SET seq = 20 WHERE seq = 21")
        await raw.run("UPDATE audit_events SET seq = 21 WHERE seq = -1")
    report = await provider.notary.verify()
    assert fault_of(report) == (20, "reordered"), report.faults[0].detail
    assert fault_of(await provider.notary.verify(kept=[signed])) == (20, "reordered")


# --- rollback: tail cut and refilled with well-linked forgeries to the same length ------------

async def test_truncate_tail_and_refill_to_the_kept_size(provider, signed, tmp_path):
    """The attacker deletes the newest stored checkpoint (60) and replaces records 51..60
    with ten forged, correctly linked ones, so the trail has the length the operator's kept
    checkpoint expects. The kept copy still shows the rewrite."""
    latest = await provider.notary.checkpoint()
    assert latest is not None and latest.tree_size == TOTAL
    path = kept_file(tmp_path, latest)
    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_checkpoints WHERE tree_size = ?", TOTAL)
        await raw.run("DELETE FROM audit_events WHERE seq > ?", 50)
        for seq in range(51, TOTAL + 1):
            await insert_row(raw, seq, FORGED, link(await prev_hash(raw, seq), FORGED))
    report = await provider.notary.verify(kept=[latest])
    assert not report.ok and report.faults[0].kind == "checkpoint_mismatch", report.faults
    assert report.faults[0].seq == TOTAL
    cli = audit_cli(provider.settings, "verify", "--checkpoint", str(path))
    assert cli.returncode == 1 and cli.stdout.startswith("FAULT checkpoint_mismatch at seq 60")


# --- laundering: make the honest notary sign a rewritten trail --------------------------------

async def test_delete_checkpoints_rewrite_and_let_the_notary_resign(provider, signed):
    """Stored checkpoints deleted, record 20 rewritten and the chain recomputed to the end;
    the next housekeeping checkpoint (a fresh notary, as after a restart) then signs the
    forged trail from genesis. The checkpoint at 40 kept elsewhere must still refuse it."""
    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_checkpoints")
        await rechain(raw, 20, TOTAL, lambda r: r["requestParameters"].update(
            orderId="999"))
    fresh = Notary(provider.fast, provider.wrapper, postgres=provider.audit.postgres)
    laundered = await fresh.checkpoint()
    assert laundered is not None and laundered.tree_size == TOTAL  # signed over the forgery
    report = await fresh.verify(kept=[signed])
    assert not report.ok, "the rewritten trail verified against the kept checkpoint"
    assert report.faults[0].seq <= SIGNED
    assert report.faults[0].kind in ("checkpoint_mismatch", "modified"), report.faults


async def test_delete_signing_keys_so_a_new_key_signs_the_rewrite(provider, signed):
    """The attacker deletes the notary's key rows and every checkpoint, rewrites the trail,
    and lets a fresh notary generate a new (properly wrapped) key and sign. The kept
    checkpoint was signed by the deleted key: verify must not call the trail ok."""
    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_checkpoints")
        await raw.run("DELETE FROM audit_signing_keys")
        await rechain(raw, 10, TOTAL, lambda r: r["requestParameters"].update(orderId="x"))
    fresh = Notary(provider.fast, provider.wrapper, postgres=provider.audit.postgres)
    laundered = await fresh.checkpoint()
    assert laundered is not None and laundered.key_id != signed.key_id
    assert (await fresh.verify()).ok  # documented: nothing kept, nothing to compare with
    report = await fresh.verify(kept=[signed])
    assert not report.ok
    assert (report.faults[0].seq, report.faults[0].kind) == (SIGNED, "bad_signature")


# --- archive rows: a real signature replayed onto another range -------------------------------

@pytest.mark.parametrize("replay", ["widen-the-real-row", "copy-onto-the-next-range"])
async def test_replay_a_real_archive_signature(provider, signed, tmp_path, replay):
    seg = await archive(provider.fast, provider.notary, tmp_path / "arch", upto_seq=20)
    assert seg is not None and (seg.first_seq, seg.last_seq) == (1, 20)
    async with tampering(provider.settings) as raw:
        kid, sig, real_last = await raw.one(
            "SELECT key_id, signature, last_hash FROM audit_archives")
        if replay == "widen-the-real-row":
            await raw.run("DELETE FROM audit_archives")
            await _forge_range(raw, 1, 30, real_prefix=seg, kid=kid, sig=bytes(sig),
                               start_prev=GENESIS)
            first = 1
        else:
            await _forge_range(raw, 21, 40, real_prefix=seg, kid=kid, sig=bytes(sig),
                               start_prev=bytes(real_last))
            first = 21
        await raw.run("DELETE FROM audit_events WHERE seq <= ?", 40)
    report = await provider.notary.verify(kept=[signed])
    assert fault_of(report) == (first, "bad_signature"), report.faults[0].detail


async def _forge_range(raw: Raw, first: int, last: int, *, real_prefix: Any, kid: str,
                       sig: bytes, start_prev: bytes) -> None:
    """An archive row for ``first..last`` with the true last hash and frontier (computed
    from the segment file for the archived part, the table for the rest)."""
    lines = [json.loads(x) for x in real_prefix.path.read_text().splitlines()]
    hashes = [bytes.fromhex(x["hash"]) for x in lines if "seq" in x]
    hashes += await leaves(raw, last)
    rng = CompactRange()
    for h in hashes[:last]:
        rng.append(h)
    await raw.run("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, sha256, "
                  "frontier, created_at, start_prev, checkpoints, key_id, signature) VALUES "
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  last, first, hashes[last - 1], str(real_prefix.path), "0" * 64,
                  json.dumps([h.hex() for h in rng.frontier()]), 1_700_000_000, start_prev,
                  json.dumps([]), kid, sig)


# --- crashes instead of a named fault ----------------------------------------------------------

def _with_resources_object(body: bytes) -> bytes:
    record = json.loads(body)
    record["resources"] = {"ARN": "arn:bastion:orders:::order/1"}
    return canonical(record)


@pytest.mark.parametrize("where", ["edited-under-the-checkpoint", "appended-at-the-tail"])
async def test_body_with_resources_as_an_object_crashes_verify(provider, signed, where):
    """Was: trail.search_columns raised KeyError (resources[0] on a dict) and check_row did
    not catch it, so verify crashed instead of naming the record."""
    async with tampering(provider.settings) as raw:
        if where == "edited-under-the-checkpoint":
            body, h = await row(raw, 20)
            await raw.run("UPDATE audit_events SET body = ? WHERE seq = 20",
                          _with_resources_object(body))
            seq = 20
        else:
            body, _h = await row(raw, TOTAL)
            forged = _with_resources_object(body)
            seq = TOTAL + 1
            await raw.run("INSERT INTO audit_events (seq, event_time, event_name, actor, "
                          "resource, outcome, request_id, body, hash) VALUES "
                          "(?, 0, 'GetOrder', NULL, NULL, 'success', NULL, ?, ?)",
                          seq, forged, link(await prev_hash(raw, seq), forged))
    report = await provider.notary.verify()  # raises KeyError today
    assert fault_of(report) == (seq, "modified"), report.faults


NESTED = "[" * 50_000 + "]" * 50_000
NESTED_INNER = json.dumps({"checkpoint": "[" * 2000 + "]" * 2000, "frontier": []})


@pytest.mark.parametrize("document", [NESTED, NESTED_INNER], ids=["document", "inner-4k"])
async def test_deeply_nested_checkpoint_document_crashes_verify(provider, signed, document):
    """Was: json.loads raised RecursionError, uncaught by Notary._stored_checkpoints and
    checkpoint.from_json. The notary must also go on signing past the unreadable one."""
    async with tampering(provider.settings) as raw:
        await raw.run("UPDATE audit_checkpoints SET document = ? WHERE tree_size = ?",
                      document, SIGNED)
    report = await provider.notary.verify()
    assert fault_of(report) == (SIGNED, "bad_signature")
    await fill(provider, TOTAL + 5)
    fresh = Notary(provider.fast, provider.wrapper, postgres=provider.audit.postgres)
    cp = await fresh.checkpoint()
    assert cp is not None and cp.tree_size == TOTAL + 5


async def test_deeply_nested_archive_row_crashes_verify(provider, signed):
    """Was: with the triggers on, an archive row with a junk signature and a frontier nested
    deeper than the recursion limit made ArchiveRow.parse raise RecursionError, uncaught by
    trusted_archives."""
    async with raw_connection(provider.settings) as raw:  # the append-only triggers stay on
        await raw.run("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, "
                      "sha256, frontier, created_at, start_prev, checkpoints, key_id, "
                      "signature) VALUES (30, 1, ?, 'x', 'x', ?, 0, ?, '[]', 'k', ?)",
                      bytes(32), NESTED, bytes(32), bytes(64))
    report = await provider.notary.verify()
    assert fault_of(report) == (1, "bad_signature")


def _limited_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``bastion audit`` with at most 2 GiB of address space and 120 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_DATABASE_URL"] = settings.effective_database_url

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([BASTION, "audit", *args, "--data-dir", str(settings.data_dir)],
                          capture_output=True, text=True, env=env, timeout=120, check=False,
                          preexec_fn=limit, stdin=subprocess.DEVNULL)  # noqa: PLW1509


async def test_legacy_archive_row_pointing_at_dev_zero_exhausts_verify(provider, signed):
    """Was: archive._legacy_segment read an unsigned row's path whole (Path.read_bytes):
    '/dev/zero' exhausted memory. Now only a regular file up to MAX_LEGACY_SEGMENT, streamed."""
    async with tampering(provider.settings) as raw:
        await raw.run("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, "
                      "sha256, frontier, created_at) VALUES (30, 1, ?, '/dev/zero', ?, ?, 0)",
                      bytes(32), "0" * 64, json.dumps([bytes(32).hex()] * 4))
    result = _limited_cli(provider.settings, "verify")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])
    assert result.stdout.startswith("FAULT bad_signature at seq 1"), result.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("step", ["verify", "checkpoint"])
async def test_key_row_with_an_integer_private_key(provider, signed, step):
    """Was: bytes(huge int) raised OverflowError in Notary.public_keys and _signing_key:
    verify crashed and an 'active' row stopped every new checkpoint."""
    async with raw_connection(provider.settings) as raw:  # INSERT is not refused
        await raw.run("INSERT INTO audit_signing_keys (kid, private_key, public_key, status, "
                      "created_at) VALUES ('audit-mallory', ?, ?, 'active', ?)",
                      2**63 - 1, bytes(32), 2**31 - 1)
    fresh = Notary(provider.fast, provider.wrapper, postgres=provider.audit.postgres)
    if step == "verify":
        assert (await fresh.verify()).ok
    else:
        cp = await fresh.checkpoint()
        assert cp is not None and cp.tree_size == TOTAL and cp.key_id != "audit-mallory"


async def test_huge_body_at_the_tail_fails_cleanly(provider, signed):
    """A 48 MB forged body with a junk hash: named quickly, not a hang."""
    huge = canonical({"eventName": "GetOrder", "padding": "a" * (48 << 20)})
    async with raw_connection(provider.settings) as raw:
        await insert_row(raw, TOTAL + 1, huge, bytes(32))
    report = await provider.notary.verify()
    assert not report.ok and report.faults[0].seq == TOTAL + 1, report.faults


# --- forged records verify never reads ----------------------------------------------------------

async def _insert_refused(settings: Settings, seq: int) -> None:
    """With the triggers on, the database refuses a record that is not after the last one
    (migration 0003); the attacker who drops the triggers is left to verify."""
    with pytest.raises(Exception, match="append-only"):
        async with raw_connection(settings) as raw:
            await insert_row(raw, seq, FORGED, link(GENESIS, FORGED))


@pytest.mark.parametrize("seq", [0, -7])
async def test_forged_record_below_seq_1_is_invisible_to_verify(provider, signed, seq):
    """Verify used to read only seq > start (notary._ROWS_SQL), so a forged record at seq 0
    or below was shown by 'audit search' while verify said ok."""
    await _insert_refused(provider.settings, seq)
    async with tampering(provider.settings) as raw:
        await insert_row(raw, seq, FORGED, link(GENESIS, FORGED))
    found = search_cli(provider.settings, "--request-id", "forged")
    assert [r["requestParameters"] for r in found] == [{"userName": "mallory"}]
    report = await provider.notary.verify()
    assert not report.ok, "a forged record is in the table and in search, verify said ok"
    assert report.faults[0].kind == "inserted"


async def test_forged_record_inside_an_archived_range_is_invisible_to_verify(provider, signed,
                                                                             tmp_path):
    """After retention archived seq 1..20, a forged record at seq 5 was shown by 'audit
    search' while verify started at seq 21 (notary._ROWS_SQL) and said ok."""
    seg = await archive(provider.fast, provider.notary, tmp_path / "arch", upto_seq=20)
    assert seg is not None and seg.last_seq == 20
    await _insert_refused(provider.settings, 5)
    async with tampering(provider.settings) as raw:
        await insert_row(raw, 5, FORGED, link(GENESIS, FORGED))
    assert len(search_cli(provider.settings, "--request-id", "forged")) == 1
    report = await provider.notary.verify()
    assert not report.ok and report.faults[0].kind == "inserted"


# --- hiding from search below the rows verify reads -------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_index_edited_to_hide_a_record_from_search(provider, signed):
    """Was: a partial index relabelled as whole (writable_schema) hid req-20 from search
    while verify said ok; verify now runs PRAGMA integrity_check(audit_events)."""
    assert search_cli(provider.settings, "--request-id", "req-20")
    path = sqlite_path(provider.settings)
    assert path is not None
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP INDEX ix_audit_events_request_id")
        conn.execute("CREATE INDEX ix_audit_events_request_id ON audit_events (request_id) "
                     "WHERE request_id <> 'req-20'")
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX ix_audit_events_request_id "
                     "ON audit_events (request_id)' WHERE name = 'ix_audit_events_request_id'")
        conn.execute(f"PRAGMA schema_version = {version + 1}")
        conn.execute("PRAGMA writable_schema = OFF")
    finally:
        conn.close()
    hidden = search_cli(provider.settings, "--request-id", "req-20")
    report = await provider.notary.verify()
    assert hidden or not report.ok, "record 20 is hidden from search and verify says ok"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_view_hides_a_record_from_search(provider, signed):
    """Was: a view in place of audit_events hid record 20 from search queries only; verify
    now checks pg_class.relkind, rules, row-level security and partial indexes."""
    before = [r["requestParameters"]["orderId"]
              for r in search_cli(provider.settings, "--event", "GetOrder", "--limit", "1000")]
    assert "20" in before
    async with raw_connection(provider.settings) as raw:
        await raw.run("ALTER TABLE audit_events RENAME TO audit_events_all")
        await raw.run("CREATE VIEW audit_events AS SELECT * FROM audit_events_all WHERE NOT "
                      "(seq = 20 AND current_query() LIKE '%event_name = %')")
    try:
        after = [r["requestParameters"]["orderId"] for r in
                 search_cli(provider.settings, "--event", "GetOrder", "--limit", "1000")]
        report = await provider.notary.verify()
        assert "20" in after or not report.ok, "record 20 hidden from search, verify ok"
    finally:
        async with raw_connection(provider.settings) as raw:
            await raw.run("DROP VIEW audit_events")
            await raw.run("ALTER TABLE audit_events_all RENAME TO audit_events")


async def test_partial_index_is_named(provider, signed):
    """A partial index left as such (no writable_schema): the catalog shows it (SQLite
    ``sqlite_master``, PostgreSQL ``pg_index.indpred``) and verify names it."""
    async with raw_connection(provider.settings) as raw:
        await raw.run("DROP INDEX ix_audit_events_request_id")
        await raw.run("CREATE INDEX ix_audit_events_request_id ON audit_events (request_id) "
                      "WHERE request_id <> 'req-20'")
    try:
        report = await provider.notary.verify()
        assert fault_of(report) == (1, "schema_tampered"), report.faults
        assert "partial" in report.faults[0].detail
    finally:  # PostgreSQL's schema is shared by the session's tests
        async with raw_connection(provider.settings) as raw:
            await raw.run("DROP INDEX ix_audit_events_request_id")
            await raw.run("CREATE INDEX ix_audit_events_request_id ON audit_events "
                          "(request_id)")
