"""Attacks through retention and outside the hash, on SQLite and PostgreSQL: someone with write
access to the database but not the key file (docs/audit.md) forges an ``audit_archives`` row
to make records deletable, edits a search column to hide a record from ``audit search``, or
stores a value of the wrong type. ``Notary.verify`` must name each one.

The trail under attack is test_tamper's: records 1..60, a signed checkpoint at 40.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.archive import archive, trusted_archives
from bastion.audit.checkpoint import Checkpoint, sign_checkpoint
from bastion.audit.merkle import CompactRange
from bastion.kms import KeyWrapper
from tests.audit.test_tamper import (
    SIGNED,
    TOTAL,
    Raw,
    fault_of,
    fill,
    raw_connection,
    sqlite_path,
    tampering,
)

pytestmark = pytest.mark.anyio



def files_in(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def leaves(raw: Raw, upto: int) -> list[bytes]:
    return [bytes(h) for (h,) in await raw.rows(
        "SELECT hash FROM audit_events WHERE seq <= ? ORDER BY seq", upto)]


async def forge_archive(raw: Raw, first: int, last: int, *, signature: bytes | None,
                        key_id: str | None = None, start_prev: bytes | None = None) -> None:
    """The strongest forgery without the key: a row with the true last hash and frontier
    (read from the database), claiming records ``first..last``."""
    hashes = await leaves(raw, last)
    rng = CompactRange()
    for h in hashes:
        rng.append(h)
    await raw.run("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, sha256, "
                  "frontier, created_at, start_prev, checkpoints, key_id, signature) VALUES "
                  "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  last, first, hashes[-1], "/nowhere/audit.jsonl", "0" * 64,
                  json.dumps([h.hex() for h in rng.frontier()]), 1_700_000_000, start_prev,
                  json.dumps([]), key_id, signature)


async def key_id(provider: Any) -> str:
    [kid] = list(await provider.notary.public_keys())
    return kid


# --- forged archive rows ---------------------------------------------------------------------

async def test_forged_archive_row_then_delete_is_found_with_the_triggers_on(provider, signed):
    """The triggers cannot check a signature: a row with a junk one is accepted, and it makes
    records 1..30 deletable. Verify does check it: a bad signature at seq 1."""
    kid = await key_id(provider)
    async with raw_connection(provider.settings) as raw:
        await forge_archive(raw, 1, 30, signature=bytes(64), key_id=kid,
                            start_prev=bytes(32))
        await raw.run("DELETE FROM audit_events WHERE seq <= ?", 30)
    report = await provider.notary.verify()
    assert fault_of(report) == (1, "bad_signature"), report.faults[0].detail
    assert "archive row for seq 1-30" in report.faults[0].detail
    assert fault_of(await provider.notary.verify(kept=[signed])) == (1, "bad_signature")


async def test_forged_unsigned_archive_row_then_delete_is_found(provider, signed):
    """Triggers dropped: a row without a signature (as rows were before 0003) and no segment
    file behind it is not trusted."""
    async with tampering(provider.settings) as raw:
        await forge_archive(raw, 1, 50, signature=None)
        await raw.run("DELETE FROM audit_events WHERE seq <= ?", 50)
    report = await provider.notary.verify()
    assert fault_of(report) == (1, "bad_signature"), report.faults[0].detail
    assert "segment file" in report.faults[0].detail


async def test_forged_archive_with_a_kept_checkpoint_older_than_it_fails(provider, signed,
                                                                         tmp_path):
    """Before: verify started after the forged archive (seq 51) and dropped the kept
    checkpoint at 40 as older than the start. It is honoured now."""
    kept_file = tmp_path / "kept.json"
    kept_file.write_text(signed.to_json())
    kept = Checkpoint.from_json(kept_file.read_text())
    kid = await key_id(provider)
    async with raw_connection(provider.settings) as raw:
        await forge_archive(raw, 1, 50, signature=bytes(64), key_id=kid,
                            start_prev=bytes(32))
        await raw.run("DELETE FROM audit_events WHERE seq <= ?", 50)
    assert not (await provider.notary.verify(kept=[kept])).ok
    async with tampering(provider.settings) as raw:  # and with the stored one gone too
        await raw.run("DELETE FROM audit_checkpoints")
    report = await provider.notary.verify(kept=[kept])
    assert fault_of(report) == (1, "bad_signature")


async def test_forged_archive_after_a_real_one_is_found(provider, signed, tmp_path):
    seg = await archive(provider.fast, provider.notary, tmp_path, upto_seq=20)
    assert seg is not None and (seg.first_seq, seg.last_seq) == (1, 20)
    assert (await provider.notary.verify()).ok
    real = await provider.fast.one("SELECT last_hash FROM audit_archives")
    assert real is not None
    kid = await key_id(provider)
    async with raw_connection(provider.settings) as raw:
        await forge_archive(raw, 21, 40, signature=bytes(64), key_id=kid,
                            start_prev=bytes(real[0]))
        await raw.run("DELETE FROM audit_events WHERE seq <= ?", 40)
    report = await provider.notary.verify(kept=[signed])
    assert fault_of(report) == (21, "bad_signature"), report.faults[0].detail


async def test_archive_signed_by_a_key_the_attacker_added_is_not_trusted(provider, signed):
    """The attacker adds a signing-key row with a key of their own (they cannot wrap it with
    the KEK) and signs the forged archive row with it."""
    from bastion.audit.archive import archive_statement

    mine = Ed25519PrivateKey.generate()
    junk = KeyWrapper(bytes(32)).wrap(mine.private_bytes_raw(), "audit-checkpoint")
    async with raw_connection(provider.settings) as raw:
        await raw.run("INSERT INTO audit_signing_keys (kid, private_key, public_key, status, "
                      "created_at) VALUES (?, ?, ?, 'retired', 0)", "audit-mallory", junk,
                      mine.public_key().public_bytes_raw())
        hashes = await leaves(raw, 30)
        rng = CompactRange()
        for h in hashes:
            rng.append(h)
        statement = archive_statement(first_seq=1, last_seq=30, start_prev=bytes(32),
                                      last_hash=hashes[-1], frontier=rng.frontier(),
                                      checkpoints=[], sha256="0" * 64, key_id="audit-mallory")
        await forge_archive(raw, 1, 30, signature=mine.sign(statement), key_id="audit-mallory",
                            start_prev=bytes(32))
        await raw.run("DELETE FROM audit_events WHERE seq <= ?", 30)
    assert "audit-mallory" not in await provider.notary.public_keys()
    assert fault_of(await provider.notary.verify()) == (1, "bad_signature")


async def test_deleted_archive_row_is_found(provider, signed, tmp_path):
    await archive(provider.fast, provider.notary, tmp_path, upto_seq=20)
    async with tampering(provider.settings) as raw:
        await raw.run("DELETE FROM audit_archives")
    assert fault_of(await provider.notary.verify()) == (1, "deleted")


@pytest.mark.parametrize("column, value", [
    ("last_hash", bytes(32)), ("first_seq", 2), ("frontier", "[]"), ("sha256", "f" * 64),
    ("checkpoints", "[]"), ("signature", bytes(64)),
], ids=["last-hash", "first-seq", "frontier", "file-digest", "checkpoints", "signature"])
async def test_edited_archive_row_is_a_bad_signature(provider, signed, tmp_path, column,
                                                     value):
    seg = await archive(provider.fast, provider.notary, tmp_path, upto_seq=50)
    assert seg is not None and seg.last_seq == 50  # the checkpoint at 40 is inside
    assert (await provider.notary.verify()).ok
    async with tampering(provider.settings) as raw:
        await raw.run(f"UPDATE audit_archives SET {column} = ?", value)  # noqa: S608
    report = await provider.notary.verify()
    assert not report.ok
    assert report.faults[0].kind in ("bad_signature", "deleted"), report.faults[0]


# --- checkpoints over archived records --------------------------------------------------------

async def test_kept_checkpoint_inside_a_real_archive_is_checked(provider, signed, tmp_path):
    """A kept checkpoint older than the archive is compared with what the archive row signed
    (the checkpoints its records were checked against), not skipped."""
    seg = await archive(provider.fast, provider.notary, tmp_path, upto_seq=50)
    assert seg is not None and seg.last_seq == 50
    report = await provider.notary.verify(kept=[signed])
    assert report.ok, report.faults
    without = await provider.notary.verify()
    assert report.checkpoints_verified == without.checkpoints_verified + 1

    # the key holder forks the log at 40: the kept copy no longer matches what was archived
    kid, sign = None, None
    async with provider.fast.transaction() as tx:
        kid, sign = await provider.notary.signer(tx)
    assert kid is not None and sign is not None
    _kid, key = provider.notary._key
    fork = sign_checkpoint(key, kid, SIGNED, bytes(32), signed.last_hash, signed.timestamp,
                           signed.previous)
    forked = await provider.notary.verify(kept=[fork])
    assert fault_of(forked) == (SIGNED, "checkpoint_mismatch"), forked.faults


async def test_kept_checkpoint_at_the_end_of_an_archive_is_checked(provider, signed,
                                                                   tmp_path):
    await archive(provider.fast, provider.notary, tmp_path, upto_seq=SIGNED)
    report = await provider.notary.verify(kept=[signed])
    assert report.ok, report.faults


async def test_archiving_refuses_a_damaged_range(provider, signed, tmp_path):
    """A signature over damaged records would vouch for the damage."""
    from bastion.audit.archive import ArchiveError
    from tests.audit.test_tamper import edit

    async with tampering(provider.settings) as raw:
        await edit(raw, 10)
    with pytest.raises(ArchiveError, match="damaged at seq 10"):
        await archive(provider.fast, provider.notary, tmp_path / "arch", upto_seq=30)
    assert files_in(tmp_path / "arch") == []  # no partial file left
    assert await provider.fast.one("SELECT last_seq FROM audit_archives") is None


async def test_archiving_refuses_to_continue_a_forged_row(provider, signed, tmp_path):
    from bastion.audit.archive import ArchiveError

    kid = await key_id(provider)
    async with raw_connection(provider.settings) as raw:
        await forge_archive(raw, 1, 20, signature=bytes(64), key_id=kid,
                            start_prev=bytes(32))
    with pytest.raises(ArchiveError, match="not trusted"):
        await archive(provider.fast, provider.notary, tmp_path, upto_seq=30)


# --- the triggers on audit_archives ------------------------------------------------------------

REFUSED_ARCHIVE_SQL = {
    "update": ("UPDATE audit_archives SET last_seq = 99", ()),
    "delete": ("DELETE FROM audit_archives", ()),
    "insert-unsigned": ("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, "
                        "sha256, frontier, created_at) VALUES (30, 21, ?, 'x', 'x', '[]', 0)",
                        (bytes(32),)),
    "insert-with-a-gap": ("INSERT INTO audit_archives (last_seq, first_seq, last_hash, path, "
                          "sha256, frontier, created_at, signature) VALUES (50, 30, ?, 'x', "
                          "'x', '[]', 0, ?)", (bytes(32), bytes(64))),
}


@pytest.mark.parametrize("sql, args", REFUSED_ARCHIVE_SQL.values(),
                         ids=REFUSED_ARCHIVE_SQL.keys())
async def test_archive_rows_are_append_only(provider, signed, tmp_path, sql, args):
    await archive(provider.fast, provider.notary, tmp_path, upto_seq=20)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.PostgresError), match="append-only"):
        async with raw_connection(provider.settings) as raw:
            await raw.run(sql, *args)
    assert (await provider.notary.verify()).ok


async def test_records_outside_every_archive_row_cannot_be_deleted(provider, signed,
                                                                   tmp_path):
    await archive(provider.fast, provider.notary, tmp_path, upto_seq=20)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.PostgresError), match="append-only"):
        async with raw_connection(provider.settings) as raw:
            await raw.run("DELETE FROM audit_events WHERE seq = 21")


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_refuses_truncate_of_archive_rows(provider, signed):
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        async with raw_connection(provider.settings) as raw:
            await raw.run("TRUNCATE audit_archives")


async def test_a_legacy_unsigned_row_is_trusted_only_through_its_segment(provider, signed,
                                                                         tmp_path):
    """A row written before rows were signed (NULL signature): its segment file vouches for
    it; without the file it is a fault."""
    seg = await archive(provider.fast, provider.notary, tmp_path, upto_seq=30)
    assert seg is not None
    async with tampering(provider.settings) as raw:  # what migration 0003 found
        await raw.run("UPDATE audit_archives SET signature = NULL, key_id = NULL, "
                      "start_prev = NULL, checkpoints = NULL")
    keys = await provider.notary.public_keys()
    assert (await trusted_archives(provider.fast, keys)).last_seq == 30
    assert (await provider.notary.verify(kept=[signed])).ok
    seg.path.unlink()
    assert fault_of(await provider.notary.verify()) == (1, "bad_signature")


# --- search columns and types -----------------------------------------------------------------

SEARCH_EDITS = {
    "event_time": 1,
    "event_name": "Login",
    "actor": "arn:bastion:iam::000000000000:user/mallory",
    "resource": "arn:bastion:orders:::order/1",
    "outcome": "failure",
    "request_id": None,
}


@pytest.mark.parametrize("column, value", SEARCH_EDITS.items(), ids=SEARCH_EDITS.keys())
async def test_edited_search_column_is_found(provider, signed, column, value):
    """The columns are outside the hash: before, an edit hid the record from ``audit search``
    while verify said ok."""
    async with tampering(provider.settings) as raw:
        await raw.run(f"UPDATE audit_events SET {column} = ? WHERE seq = 20", value)  # noqa: S608
    report = await provider.notary.verify()
    assert fault_of(report) == (20, "modified"), report.faults[0].detail
    assert f"search column {column}" in report.faults[0].detail


async def test_body_that_is_not_json_is_named(provider, signed):
    from bastion.audit.chain import link

    async with tampering(provider.settings) as raw:
        (prev,) = await raw.one("SELECT hash FROM audit_events WHERE seq = 19")
        body = b"\xff\xfe not json"
        await raw.run("UPDATE audit_events SET body = ?, hash = ? WHERE seq = 20", body,
                      link(bytes(prev), body))
    report = await provider.notary.verify()
    assert report.faults[0].seq == 20 and not report.ok
    assert "not a JSON object" in report.faults[0].detail or \
        report.faults[0].kind == "modified"


WRONG_TYPES = {
    "body-integer": ("body", 42),
    "body-text": ("body", "{}"),
    "hash-text": ("hash", "00"),
    "hash-integer": ("hash", 7),
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("column, value", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
async def test_value_of_the_wrong_type_is_a_fault_not_a_crash(provider, signed, column,
                                                              value):
    """SQLite keeps whatever type it is given (PostgreSQL's bytea refuses these)."""
    assert sqlite_path(provider.settings) is not None
    async with tampering(provider.settings) as raw:
        await raw.run(f"UPDATE audit_events SET {column} = ? WHERE seq = 20", value)  # noqa: S608
    report = await provider.notary.verify()
    assert fault_of(report) == (20, "modified")
    assert report.faults[0].detail.startswith("stored with the wrong type"), report.faults


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_verify_command_names_a_wrong_typed_body(provider, signed):
    from tests.audit.test_cli_audit import audit_cli

    async with tampering(provider.settings) as raw:
        await raw.run("UPDATE audit_events SET body = ? WHERE seq = 20", 42)
    result = audit_cli(provider.settings, "verify")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("FAULT modified at seq 20: stored with the wrong type")


async def test_untampered_archived_trail_still_verifies(provider, signed, tmp_path):
    await fill(provider, TOTAL + 5)
    await archive(provider.fast, provider.notary, tmp_path, upto_seq=30)
    await archive(provider.fast, provider.notary, tmp_path, upto_seq=55)
    report = await provider.notary.verify(kept=[signed])
    assert report.ok, report.faults
    assert report.records == TOTAL + 5 - 55


async def test_an_active_key_row_the_attacker_added_is_not_used_to_sign(provider, signed):
    """Before, the newest 'active' row was used as is: a row of the attacker's (a key they
    cannot wrap with the KEK) stopped every checkpoint with an unwrap error."""
    from bastion.audit.notary import Notary

    mine = Ed25519PrivateKey.generate()
    async with raw_connection(provider.settings) as raw:
        await raw.run("INSERT INTO audit_signing_keys (kid, private_key, public_key, status, "
                      "created_at) VALUES (?, ?, ?, 'active', ?)", "audit-mallory",
                      KeyWrapper(bytes(32)).wrap(mine.private_bytes_raw(), "audit-checkpoint"),
                      mine.public_key().public_bytes_raw(), 2**31 - 1)
    fresh = Notary(provider.fast, provider.wrapper, postgres=provider.audit.postgres)
    cp = await fresh.checkpoint()
    assert cp is not None and cp.tree_size == TOTAL and cp.key_id != "audit-mallory"
    assert cp.verify(await fresh.public_keys())
    assert (await fresh.verify()).ok
