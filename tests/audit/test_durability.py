"""The trail when things go wrong: the database unwritable (fail closed, or spool and move
back in order), hostile values, secrets that must never be recorded, and a ``kill -9`` under
load (every answered request's records survive). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.app import build_app
from bastion.audit.record import canonical_bytes
from bastion.config import Settings
from bastion.runtime import open_provider
from tests.audit.test_cli_audit import audit_cli, ok
from tests.audit.test_tamper import raw_connection
from tests.conftest import ISSUER, _reset, make_settings
from tests.edge.test_authz import TEA, mint
from tests.flows import PASSWORD, authorize, bearer, exchange, hidden_fields, tokens_for
from tests.live import LiveServer, start_live_server

pytestmark = pytest.mark.anyio


# --- helpers ----------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def trail_unwritable(settings: Settings) -> AsyncIterator[None]:
    """``audit_events`` renamed away by another connection, and back afterwards."""
    async with raw_connection(settings) as raw:
        await raw.run("ALTER TABLE audit_events RENAME TO audit_events_away")
    try:
        yield
    finally:
        async with raw_connection(settings) as raw:
            await raw.run("ALTER TABLE audit_events_away RENAME TO audit_events")


async def request_ids(provider: Any) -> list[str | None]:
    rows = await provider.fast.all("SELECT request_id FROM audit_events ORDER BY seq")
    return [r[0] for r in rows]


async def all_rows(provider: Any) -> list[tuple[Any, ...]]:
    rows = await provider.fast.all("SELECT seq, event_name, actor, resource, outcome, "
                                   "request_id, body, hash FROM audit_events ORDER BY seq")
    return [tuple(r) for r in rows]


@contextlib.asynccontextmanager
async def client_for(provider: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(provider), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


# --- (a) fail closed ------------------------------------------------------------------------------

async def test_fail_closed_answers_503_while_the_trail_is_unwritable(provider, http, alice):
    assert provider.settings.audit_failure_mode == "fail_closed"  # the default
    token = mint(provider, alice)
    assert (await http.get("/orders", headers=bearer(token))).status_code == 200

    async with trail_unwritable(provider.settings):
        refused = await http.get("/orders", headers=bearer(token))
        assert refused.status_code == 503
        body = refused.json()
        assert body["error"] == "temporarily_unavailable"
        assert body["request_id"] == refused.headers["x-request-id"]
        assert len(body["request_id"]) == 24
        assert refused.headers["retry-after"] == "5"
        assert refused.headers["cache-control"] == "no-store"

    after = [await http.get("/orders", headers=bearer(token)) for _ in range(3)]
    assert [r.status_code for r in after] == [200, 200, 200]
    await provider.audit.flush()
    ids = await request_ids(provider)
    assert body["request_id"] not in ids  # nothing half-recorded for the refused request
    for r in after:
        assert ids.count(r.headers["x-request-id"]) == 2  # SqlStatement + ListOrders
    report = await provider.notary.verify()
    assert report.ok, report.faults


async def test_fail_closed_create_leaves_no_unrecorded_order(provider, http, alice):
    token = mint(provider, alice)
    async with trail_unwritable(provider.settings):
        refused = await http.post("/orders", json=TEA, headers=bearer(token))
        assert refused.status_code == 503
    listed = await http.get("/orders", headers=bearer(token))
    assert listed.json()["orders"] == []


# --- (b) spool --------------------------------------------------------------------------------------

@pytest.fixture
async def spooling(tmp_path: Path, database_url: str) -> AsyncIterator[Any]:
    await _reset(database_url)
    p = await open_provider(make_settings(tmp_path, database_url, audit_failure_mode="spool"))
    try:
        yield p
    finally:
        await p.close()


def spooled_lines(provider: Any) -> list[bytes]:
    spool = provider.settings.data_dir / "audit-spool"
    lines = []
    for name in ("spool.draining.jsonl", "spool.jsonl"):  # oldest first
        path = spool / name
        if path.exists():
            lines += [line for line in path.read_bytes().splitlines() if line]
    return lines


async def spool_outage(provider: Any, token: str, requests: int = 3) -> tuple[
        list[str], list[bytes]]:
    """Requests answered while the trail is unwritable: their ids and the spooled bodies."""
    spool = provider.settings.data_dir / "audit-spool" / "spool.jsonl"
    async with client_for(provider) as http:
        answered = []
        async with trail_unwritable(provider.settings):
            for _ in range(requests):
                r = await http.get("/orders", headers=bearer(token))
                assert r.status_code == 200, r.text
                answered.append(r.headers["x-request-id"])
            assert spool.exists()
            assert stat.S_IMODE(spool.stat().st_mode) == 0o600
            lines = spooled_lines(provider)
    assert [json.loads(b)["requestID"] for b in lines] == \
        [rid for rid in answered for _ in range(2)]  # SqlStatement, ListOrders each
    return answered, lines


async def test_spool_answers_and_drains_in_order(spooling, alice):
    provider = spooling
    token = mint(provider, alice)
    before = await all_rows(provider)
    answered, lines = await spool_outage(provider, token)
    assert await all_rows(provider) == before  # nothing reached the trail yet

    await provider.audit.drain_spool()
    assert not provider.audit.spool.pending()
    assert not list((provider.settings.data_dir / "audit-spool").iterdir())
    rows = await all_rows(provider)
    assert rows[:len(before)] == before
    assert [r[6] for r in rows[len(before):]] == lines  # exactly once, in order, as spooled
    report = await provider.notary.verify()
    assert report.ok and report.records == len(before) + len(lines)

    await provider.audit.drain_spool()  # nothing left: a second drain adds nothing
    assert len(await all_rows(provider)) == len(rows)


async def test_spool_is_moved_before_anything_newer(spooling, alice):
    provider = spooling
    token = mint(provider, alice)
    answered, lines = await spool_outage(provider, token)
    async with client_for(provider) as http:  # no explicit drain: the next append does it
        newer = await http.get("/orders", headers=bearer(token))
    assert newer.status_code == 200
    ids = await request_ids(provider)
    spooled_at = [i for i, rid in enumerate(ids) if rid in answered]
    newer_at = [i for i, rid in enumerate(ids) if rid == newer.headers["x-request-id"]]
    assert len(spooled_at) == len(lines) and len(newer_at) == 2
    assert max(spooled_at) < min(newer_at)
    assert not provider.audit.spool.pending()
    assert (await provider.notary.verify()).ok


async def test_spool_drain_waits_while_still_unwritable(spooling, alice):
    provider = spooling
    token = mint(provider, alice)
    async with client_for(provider) as http, trail_unwritable(provider.settings):
        assert (await http.get("/orders", headers=bearer(token))).status_code == 200
        await provider.audit.drain_spool()  # still down: kept for the next try
        assert provider.audit.spool.pending()
        assert len(spooled_lines(provider)) == 2
    await provider.audit.drain_spool()
    assert not provider.audit.spool.pending()
    assert (await provider.notary.verify()).ok


async def test_spool_left_behind_by_a_crash_after_commit_is_not_written_twice(spooling,
                                                                               alice):
    """A crash between committing the drained records and removing the drained file leaves
    the file behind: the next drain recognises its records (by body) and skips them."""
    provider = spooling
    _answered, lines = await spool_outage(provider, mint(provider, alice))
    await provider.audit.drain_spool()
    rows = await all_rows(provider)
    leftover = provider.audit.spool.draining
    leftover.write_bytes(b"".join(line + b"\n" for line in lines))
    await provider.audit.drain_spool()
    assert await all_rows(provider) == rows
    assert (await provider.notary.verify()).ok


async def test_spool_left_behind_by_a_crash_after_commit_is_removed(spooling, alice):
    provider = spooling
    _answered, lines = await spool_outage(provider, mint(provider, alice))
    await provider.audit.drain_spool()
    provider.audit.spool.draining.write_bytes(b"".join(line + b"\n" for line in lines))
    await provider.audit.drain_spool()
    await provider.audit.emit("GetOrder", request_id="later")
    assert not provider.audit.spool.pending()


async def test_torn_spool_line_does_not_wedge_the_trail(spooling):
    provider = spooling
    provider.audit.spool.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    provider.audit.spool.path.write_bytes(b'{"eventName":"GetOrder","eventTi')
    await provider.audit.emit("GetOrder", request_id="after-torn")
    await provider.audit.drain_spool()
    assert "after-torn" in await request_ids(provider)


# --- (c) hostile values --------------------------------------------------------------------------

HOSTILE: dict[str, dict[str, Any]] = {
    "huge-user-agent": {"user_agent": "A" * 1_000_000},
    "control-characters": {"request_parameters": {"nul": "a\x00b", "crlf": "one\r\ntwo",
                                                  "lf": "\n{\"forged\": true}\n",
                                                  "tab": "\t", "del": "\x7f", "esc": "\x1b[2J"}},
    "line-separators": {"request_parameters": {"ls": "a\u2028b", "ps": "c\u2029d",
                                               "nel": "e\x85f"}},
    "lone-surrogates": {"request_parameters": {"hi": "x\ud800y", "lo": "\udfff",
                                               "\ud83d": "key"}},
    "invalid-utf8": {"request_parameters": {"bytes": b"\xff\xfe\x80abc\xc3\x28",
                                            "nested": [b"\xed\xa0\x80", {"b": b"\x00\xff"}]}},
    "hostile-keys": {"request_parameters": {"a\nb": 1, "\x00": 2, "k\u2028": 3, 7: 4}},
    "hostile-search-columns": {
        "request_id": "req\x00\r\n\u2028\ud800\xff",
        "user_identity": {"type": "User", "arn": "arn:\x00\r\nevil\u2028", "userName": "\ud800"},
        "resources": [{"ARN": "arn:x\x00\ny", "type": "T"}],
        "error_code": "Err\x00\n", "error_message": "bad\r\nthing\u2028"},
    "non-ascii-text": {"request_parameters": {"item": "thé 🍵 чай", "rtl": "\u202eabc"}},
    "huge-parameters": {"request_parameters": {"blob": "x" * 2_000_000,
                                               "many": list(range(100_000))}},
}


async def test_hostile_values_are_stored_as_one_line_each(provider):
    before = len(await all_rows(provider))
    for name, fields in HOSTILE.items():
        record = await provider.audit.emit("GetOrder", **fields)
        assert record, name
    await provider.audit.flush()
    rows = await all_rows(provider)
    assert len(rows) == before + len(HOSTILE)
    for row in rows:
        body = bytes(row[6])
        # RFC 8785: UTF-8 with every control character escaped, so one line
        body.decode("utf-8")
        assert all(b >= 0x20 for b in body), body[:200]
        assert canonical_bytes(json.loads(body)) == body  # one canonical JSON value
        assert len(body) <= 32 * 1024
        for column in row[2:6]:  # search columns: printable ASCII or NULL
            assert column is None or (column.isascii() and column.isprintable()), column
    mine = [json.loads(bytes(r[6])) for r in rows[before:]]
    assert len(mine[0]["userAgent"]) <= 2048
    assert mine[1]["requestParameters"]["nul"] == "a\x00b"  # kept, escaped in the bytes
    assert mine[1]["requestParameters"]["lf"] == "\n{\"forged\": true}\n"
    assert mine[3]["requestParameters"]["hi"] == "x\ufffdy"
    assert "\ufffd" in mine[4]["requestParameters"]["bytes"]
    report = await provider.notary.verify()
    assert report.ok and report.records == len(rows)

    exported = ok(audit_cli(provider.settings, "export")).encode()
    assert exported.count(b"\n") == len(rows)
    assert exported.splitlines() == [bytes(r[6]) for r in rows]
    ocsf = ok(audit_cli(provider.settings, "export", "--ocsf")).splitlines()
    assert len(ocsf) == len(rows)
    assert all(json.loads(line)["class_uid"] for line in ocsf)


# --- (d) no secret reaches the trail ------------------------------------------------------------

async def failed_login(http: httpx.AsyncClient, client: Any, password: str) -> None:
    r = await http.get("/authorize", params={
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "scope": "openid", "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"})
    assert r.status_code in (302, 303), r.text
    page = await http.get(r.headers["location"])
    fields = hidden_fields(page.text)
    fields.update(username="alice", password=password)
    r = await http.post("/login", data=fields)
    assert r.status_code not in (302, 303)  # refused
    http.cookies.clear()


def jwt_parts(token: str) -> list[str]:
    return [p for p in token.split(".") if len(p) >= 16]


async def test_no_secret_reaches_the_trail(provider, http, app, alice):
    secrets_seen: list[str] = [PASSWORD, app.secret]
    wrong_password = "Tr0ub4dor&3-wrong-password"
    await failed_login(http, app, wrong_password)
    secrets_seen.append(wrong_password)

    result = await authorize(http, app)
    r = await exchange(http, app, result)
    assert r.status_code == 200, r.text
    tokens = r.json()
    secrets_seen += [result.code, result.verifier, tokens["refresh_token"]]
    secrets_seen += jwt_parts(tokens["access_token"]) + jwt_parts(tokens["id_token"])
    auth = (app.client_id, app.secret)
    refreshed = await http.post("/token", auth=auth, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    secrets_seen += [new["refresh_token"], *jwt_parts(new["access_token"])]
    replay = await exchange(http, app, result)  # a replayed code is refused and recorded
    assert replay.status_code == 400
    bad_client = await http.post("/token", auth=(app.client_id, "not-the-secret-" + "x" * 30),
                                 data={"grant_type": "client_credentials"})
    assert bad_client.status_code == 401
    secrets_seen.append("not-the-secret-" + "x" * 30)

    again = await tokens_for(http, app)
    orders = await http.get("/orders", headers={
        **bearer(again["access_token"]),
        "User-Agent": f"curl/8 Authorization: Bearer {again['access_token']} "
                      f"password={PASSWORD}"})
    assert orders.status_code == 200
    secrets_seen += jwt_parts(again["access_token"]) + [again["refresh_token"]]
    for token, hint in ((again["refresh_token"], "refresh_token"),
                        (again["access_token"], "access_token")):
        assert (await http.post("/revoke", auth=auth, data={
            "token": token, "token_type_hint": hint})).status_code == 200

    planted = "pl4nted-s3cret-value-0123456789"
    await provider.audit.emit("GetOrder", request_parameters={
        "password": planted + "-1", "client_secret": planted + "-2",
        "refresh_token": planted + "-3", "Authorization": f"Bearer {planted}-4",
        "nested": {"accessToken": planted + "-5", "list": [{"otp": planted + "-6"}]},
        "note": f"login?password={planted}-7&state=ok",
        "dsn": f"postgresql://bastion:{planted}-8@db/bastion"},
        error_message=f"Bearer {planted}-9 was refused",
        user_agent=f"client_secret={planted}-10")
    secrets_seen += [f"{planted}-{i}" for i in range(1, 11)]
    await provider.audit.flush()

    rows = await all_rows(provider)
    events = {r[1] for r in rows}
    assert {"Login", "IssueToken", "RefreshToken", "RevokeToken"} <= events, events
    stored = b"\n".join(bytes(r[6]) for r in rows).decode("utf-8") + "\n".join(
        str(c) for r in rows for c in r[2:6])
    leaked = [s for s in secrets_seen if s and s in stored]
    assert leaked == [], leaked


# --- (e) kill -9 under load --------------------------------------------------------------------

@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    """A real server over TLS on this test's database."""
    asyncio.run(_reset(database_url))
    yield from start_live_server(tmp_path / "live",
                                 env_over={"BASTION_DATABASE_URL": database_url})


async def test_kill_9_under_load_keeps_every_answered_request(live, database_url):
    """Every request that got an answer has its records in the trail after a SIGKILL in
    the middle of a concurrent load, and the trail verifies (no half-written batch)."""
    client = live.add_client("load", [], "--grant-type", "client_credentials",
                             "--scope", "order:view", "--scope", "order:create",
                             "--role", "order:view", "--role", "order:create")
    total, in_flight, kill_after = 200, 16, 60
    answered: dict[str, tuple[str, int]] = {}
    failures: list[str] = []
    killed = asyncio.Event()
    gate = asyncio.Semaphore(in_flight)
    assert live.process is not None
    async with httpx.AsyncClient(base_url=live.url, verify=live.ssl_context(), timeout=30,
                                 limits=httpx.Limits(max_connections=in_flight)) as http:
        r = await http.post("/token", data={"grant_type": "client_credentials",
                                            "scope": "order:view order:create"},
                            auth=(client["client_id"], client["client_secret"]))
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert (await http.get("/orders", headers=bearer(token))).status_code == 200

        async def one(i: int) -> None:
            async with gate:
                if killed.is_set():
                    failures.append("after kill")
                    return
                event = "CreateOrder" if i % 4 == 0 else "ListOrders"
                try:
                    if event == "CreateOrder":
                        resp = await http.post("/orders", json=TEA, headers=bearer(token))
                    else:
                        resp = await http.get("/orders", headers=bearer(token))
                except httpx.TransportError as exc:
                    failures.append(type(exc).__name__)
                    return
                answered[resp.headers["x-request-id"]] = (event, resp.status_code)
                if len(answered) >= kill_after and not killed.is_set():
                    killed.set()
                    os.kill(live.process.pid, signal.SIGKILL)  # type: ignore[union-attr]

        await asyncio.gather(*(one(i) for i in range(total)))

    assert live.process.wait(timeout=15) == -signal.SIGKILL
    assert kill_after <= len(answered) < total
    assert any(f != "after kill" for f in failures)  # requests were in flight
    assert {status for _event, status in answered.values()} <= {200, 201}

    settings = make_settings(live.data_dir.parent, database_url)
    assert settings.data_dir == live.data_dir
    async with raw_connection(settings) as raw:
        rows = await raw.rows("SELECT request_id, event_name FROM audit_events")
    recorded: dict[str, set[str]] = {}
    for rid, name in rows:
        recorded.setdefault(rid, set()).add(name)
    missing = {rid: event for rid, (event, _s) in answered.items()
               if {event, "SqlStatement"} - recorded.get(rid, set())}
    assert missing == {}, f"{len(missing)} answered requests lost their records"

    out = json.loads(ok(audit_cli(settings, "verify", "--json")))
    assert out["ok"] is True, out["faults"]
    assert out["records"] == len(rows)


# --- (d) shutdown -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fail_closed", "spool"])
async def test_failed_final_flush_at_shutdown_is_reported(tmp_path, database_url, caplog,
                                                          mode):
    """Records still queued when the server stops, with the database refusing them: before,
    ``close()`` swallowed the failure. Now it is logged at error level with the count, and a
    loss (fail_closed: nowhere to put them) makes ``close()`` raise."""
    from bastion.audit.trail import AuditUnavailable

    await _reset(database_url)
    p = await open_provider(make_settings(tmp_path, database_url, audit_failure_mode=mode))
    settings = p.settings
    async with trail_unwritable(settings):
        waiter = asyncio.create_task(p.audit.emit("GetOrder", request_id="at-shutdown"))
        await asyncio.sleep(0)  # queued, not yet written
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="bastion.audit"):
            if mode == "fail_closed":
                with pytest.raises(AuditUnavailable, match="1 audit record"):
                    await p.close()
                with pytest.raises(AuditUnavailable):
                    await waiter
            else:
                await p.close()
                await waiter
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if mode == "fail_closed":
        assert any("final flush at shutdown" in m and "LOST" in m for m in messages), messages
    else:
        assert any("final flush at shutdown" in m and "spooled" in m for m in messages)
        spool = settings.data_dir / "audit-spool" / "spool.jsonl"
        assert b"at-shutdown" in spool.read_bytes()
