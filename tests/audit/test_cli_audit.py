"""``bastion audit``: verify (text, --json, --checkpoint), checkpoint --out, search filters,
export (records and OCSF) and tail, run as the real command on SQLite and PostgreSQL.

The trail is written in-process by the ``provider`` fixture; the command runs as a
subprocess on the same data directory and database, the way an operator runs it next to a
server."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

from bastion.config import Settings
from tests.audit.test_tamper import delete, edit, fill, tampering
from tests.live import BASTION

pytestmark = pytest.mark.anyio

ACCT = "000000000000"
ALICE = f"arn:bastion:iam::{ACCT}:user/alice"
BOB = f"arn:bastion:iam::{ACCT}:user/bob"
DAY = 86_400


def audit_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``bastion audit ARGS`` on the settings' data directory and database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_DATABASE_URL"] = settings.effective_database_url
    return subprocess.run([BASTION, "audit", *args, "--data-dir", str(settings.data_dir)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def bodies(provider: Any, where: str = "1 = 1", **params: Any) -> list[dict[str, Any]]:
    rows = await provider.fast.all(f"SELECT body FROM audit_events WHERE {where} "  # noqa: S608
                                   "ORDER BY seq", **params)
    return [json.loads(bytes(r[0])) for r in rows]


# --- verify and checkpoint --------------------------------------------------------------------

async def test_verify_ok(provider):
    await fill(provider, 30)
    await provider.notary.checkpoint()
    out = ok(audit_cli(provider.settings, "verify"))
    assert out.strip() == "ok: 30 records, 1 checkpoint verified"

    data = json.loads(ok(audit_cli(provider.settings, "verify", "--json")))
    assert set(data) == {"ok", "records", "last_seq", "last_hash", "faults",
                         "checkpoints_verified", "root_hash", "tree_size"}
    assert data["ok"] is True and data["faults"] == []
    assert (data["records"], data["last_seq"], data["tree_size"]) == (30, 30, 30)
    assert data["checkpoints_verified"] == 1
    report = await provider.notary.verify()
    assert data["last_hash"] == report.last_hash.hex()
    assert data["root_hash"] == report.root_hash.hex()


async def test_verify_reports_the_fault_and_exits_1(provider):
    await fill(provider, 30)
    await provider.notary.checkpoint()
    async with tampering(provider.settings) as raw:
        await edit(raw, 12)
    text = audit_cli(provider.settings, "verify")
    assert text.returncode == 1, text.stderr
    [line] = text.stdout.strip().splitlines()
    assert line.startswith("FAULT modified at seq 12: ")

    as_json = audit_cli(provider.settings, "verify", "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    [fault] = data["faults"]
    assert (fault["seq"], fault["kind"]) == (12, "modified") and fault["detail"]


async def test_checkpoint_out_then_truncation_is_detected(provider, tmp_path):
    await fill(provider, 30)
    kept = tmp_path / "offsite" / "cp.json"
    kept.parent.mkdir()
    data = json.loads(ok(audit_cli(provider.settings, "checkpoint", "--out", str(kept),
                                   "--json")))
    assert data["tree_size"] == 30
    assert json.loads(kept.read_text()) == data
    text = ok(audit_cli(provider.settings, "checkpoint"))
    assert text.startswith("checkpoint: 30 records, root ")  # nothing new: the newest shown
    assert ok(audit_cli(provider.settings, "verify", "--checkpoint", str(kept)))

    async with tampering(provider.settings) as raw:  # cut the tail and the stored evidence
        await delete(raw, *range(26, 31))
        await raw.run("DELETE FROM audit_checkpoints")
    assert ok(audit_cli(provider.settings, "verify")).startswith("ok: 25 records")
    cut = audit_cli(provider.settings, "verify", "--checkpoint", str(kept))
    assert cut.returncode == 1
    assert cut.stdout.startswith("FAULT truncated at seq 26: ")


@pytest.mark.parametrize("content", ["", "{}", "[]", "42", "not json", '{"tree_size": 1}'],
                         ids=["empty", "empty-object", "array", "number", "not-json",
                              "missing-fields"])
async def test_verify_refuses_a_file_that_is_not_a_checkpoint(provider, tmp_path, content):
    bad = tmp_path / "cp.json"
    bad.write_text(content)
    r = audit_cli(provider.settings, "verify", "--checkpoint", str(bad))
    assert r.returncode == 2
    assert "is not a checkpoint" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr


async def test_verify_refuses_a_missing_checkpoint_file(provider, tmp_path):
    r = audit_cli(provider.settings, "verify", "--checkpoint", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


# --- search -------------------------------------------------------------------------------------

@pytest.fixture
async def mixed(provider: Any) -> dict[str, list[dict[str, Any]]]:
    """Records with different events, actors, outcomes, request ids and ages."""
    now = int(time.time())  # whole seconds: eventTime and the search column agree
    made: dict[str, list[dict[str, Any]]] = {"old": [], "recent": []}
    for i in range(4):
        made["old"].append(await provider.audit.emit(
            "GetOrder", event_time=now - 2 * DAY + i, request_id="req-old",
            user_identity={"type": "User", "arn": BOB},
            request_parameters={"orderId": f"old-{i}"}))
    for i, (event, arn, error) in enumerate([
            ("GetOrder", ALICE, None), ("ListOrders", ALICE, None),
            ("GetOrder", BOB, "NotFound"), ("Login", ALICE, "InvalidCredentials"),
            ("GetOrder", ALICE, None)]):
        made["recent"].append(await provider.audit.emit(
            event, event_time=now - 60 + i, request_id=f"req-{i}",
            user_identity={"type": "User", "arn": arn}, error_code=error,
            request_parameters={"n": i}))
    await provider.audit.flush()
    return made


def search(settings: Settings, *args: str) -> list[dict[str, Any]]:
    return json_lines(ok(audit_cli(settings, "search", "--limit", "1000", *args)))


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["eventID"] for r in records]


async def test_search_filters(provider, mixed):
    s = provider.settings
    everything = await bodies(provider)
    assert search(s) == everything  # every record, oldest first, as stored

    cases = {
        ("--event", "GetOrder"): lambda r: r["eventName"] == "GetOrder",
        ("--actor", ALICE): lambda r: r["userIdentity"].get("arn") == ALICE,
        ("--outcome", "failure"): lambda r: "errorCode" in r,
        ("--outcome", "success"): lambda r: "errorCode" not in r,
        ("--request-id", "req-2"): lambda r: r.get("requestID") == "req-2",
        ("--request-id", "req-old"): lambda r: r.get("requestID") == "req-old",
        ("--since", "1h"): lambda r: r["eventID"] not in ids(mixed["old"]),
        ("--event", "GetOrder", "--actor", BOB, "--since", "3d"):
            lambda r: r["eventName"] == "GetOrder" and r["userIdentity"].get("arn") == BOB,
        ("--event", "GetOrder", "--outcome", "failure"):
            lambda r: r["eventName"] == "GetOrder" and "errorCode" in r,
    }
    for args, keep in cases.items():
        expected = [r for r in everything if keep(r)]
        assert expected, args
        assert search(s, *args) == expected, args


async def test_search_since_and_until_with_iso_times(provider, mixed):
    old = mixed["old"]
    got = search(provider.settings, "--since", old[1]["eventTime"], "--until",
                 old[2]["eventTime"])
    assert ids(got) == ids(old[1:3])


async def test_search_since_a_records_own_event_time_finds_it(provider):
    record = await provider.audit.emit("GetOrder", event_time=1_700_000_000.0006,
                                       request_id="sub-ms")
    assert record["eventTime"] == "2023-11-14T22:13:20.001Z"
    got = search(provider.settings, "--since", record["eventTime"], "--request-id", "sub-ms")
    assert ids(got) == [record["eventID"]]


async def test_search_since_excludes_what_came_before(provider, mixed):
    recent = ids(mixed["recent"])
    got = ids(search(provider.settings, "--since", "1h", "--actor", ALICE))
    assert got == [i for i, r in zip(recent, mixed["recent"], strict=True)
                   if r["userIdentity"]["arn"] == ALICE]
    assert search(provider.settings, "--since", "1h", "--request-id", "req-old") == []


async def test_search_limit_keeps_the_oldest(provider, mixed):
    got = search(provider.settings, "--event", "GetOrder", "--limit", "2")
    assert ids(got) == ids(mixed["old"][:2])


async def test_search_ocsf(provider, mixed):
    got = search(provider.settings, "--request-id", "req-3", "--ocsf")
    [event] = got
    assert event["class_uid"] == 3002  # Login: Authentication
    assert event["metadata"]["correlation_uid"] == "req-3"


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "not a time"),
    (["--since", "15 m"], "not a time"),
    (["--since", "1w"], "not a time"),
    (["--until", "2026-13-01"], "not a time"),
    (["--outcome", "maybe"], "success or failure"),
], ids=["since-word", "since-space", "since-unknown-unit", "until-bad-month", "bad-outcome"])
async def test_search_refuses_bad_filters(provider, args, message):
    r = audit_cli(provider.settings, "search", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    assert r.stdout == ""


async def test_search_refuses_an_age_out_of_range(provider):
    r = audit_cli(provider.settings, "search", "--since", "99999999999999999d")
    assert "Traceback" not in r.stderr, r.stderr[-500:]
    assert r.returncode == 2


# --- export and tail ------------------------------------------------------------------------------

async def test_export_is_every_record_as_stored(provider, mixed):
    rows = await provider.fast.all("SELECT body FROM audit_events ORDER BY seq")
    out = ok(audit_cli(provider.settings, "export"))
    assert out.encode() == b"".join(bytes(r[0]) + b"\n" for r in rows)


async def test_export_ocsf(provider, mixed):
    everything = await bodies(provider)
    events = json_lines(ok(audit_cli(provider.settings, "export", "--ocsf")))
    assert len(events) == len(everything)
    for event, record in zip(events, everything, strict=True):
        assert isinstance(event["class_uid"], int)
        assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
        assert event["metadata"]["uid"] == record["eventID"]


async def test_tail(provider, mixed):
    everything = await bodies(provider)
    assert json_lines(ok(audit_cli(provider.settings, "tail", "-n", "3"))) == everything[-3:]
    assert json_lines(ok(audit_cli(provider.settings, "tail"))) == everything[-10:]
    assert ok(audit_cli(provider.settings, "tail", "-n", "0")) == ""
    ocsf = json_lines(ok(audit_cli(provider.settings, "tail", "-n", "3", "--ocsf")))
    assert [e["metadata"]["uid"] for e in ocsf] == ids(everything[-3:])


async def test_search_and_tail_take_json_like_every_command(provider, mixed):
    """``--json`` was refused by search and tail (usage error, exit 2); it prints JSON Lines,
    the same lines as without it."""
    s = provider.settings
    everything = await bodies(provider)
    assert search(s, "--json") == everything
    assert search(s, "--json", "--request-id", "req-3", "--ocsf")[0]["class_uid"] == 3002
    assert json_lines(ok(audit_cli(s, "tail", "-n", "2", "--json"))) == everything[-2:]
