"""Issue 11's audit gaps of the KMS, against a real ``bastion serve`` driven by boto3 and raw
requests signed with botocore: every call's record names the access key (never the secret),
unknown operations and requests refused before dispatch are audited without their body, a
flood of unsigned garbage is counted rather than written record by record, and
``migrate-root`` is audited at its start and end (kms/migrate.py, with a real SoftHSM2)."""

from __future__ import annotations

import datetime
import json
import math
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.exceptions import ClientError

from bastion.kms.migrate import MigrationError, migrate_root
from bastion.kms.refusals import RefusalAudit, source_key
from bastion.kms.root import open_root_keeper
from bastion.runtime import open_provider
from tests.conftest import _reset
from tests.kms.conftest import b64
from tests.kms.test_migrate_root import both, hsm_over, populate
from tests.kms.test_wire_api import (
    ALLOW_ALL,
    _policy_file,
    aws_error,
    code,
    kms_client,
    post,
    signed,
)
from tests.live import BASTION, LiveServer, start_live_server
from tests.test_cli import run

SECRET_MARK = "c2VjcmV0LXBsYWludGV4dC0xMjM0"  # base64 of a would-be plaintext


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from start_live_server(tmp_path_factory.mktemp("kms-audit"),
                                 env_over={"BASTION_ACCESS_KEY_CACHE_TTL": "0"})


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> dict[str, Any]:
    server.add_user("auditee")
    server.cli("iam", "inline", "put", "user", "auditee", "kms",
               _policy_file(server, ALLOW_ALL))
    return server.cli("iam", "access-keys", "create", "--user", "auditee")


def records(server: LiveServer, *, expect: int = 1, timeout: float = 10.0,
            **filters: str) -> list[dict[str, Any]]:
    """Audit records matching ``filters`` (``bastion audit search`` options), waiting until
    at least ``expect`` are there."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in filters.items()]
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([BASTION, "audit", "search", *args, "--limit", "100000",
                              "--data-dir", str(server.data_dir)], capture_output=True,
                             text=True, env=server.env, check=False)
        assert out.returncode == 0, out.stderr
        found = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def one(server: LiveServer, request_id: str) -> dict[str, Any]:
    found = records(server, request_id=request_id)
    assert len(found) == 1, found
    return found[0]


# --- 1. every call names its access key ------------------------------------------------------
def test_every_call_record_names_the_access_key_never_the_secret(
        server: LiveServer, admin: dict[str, Any]) -> None:
    kms = kms_client(server, admin)
    key = kms.create_key(Description="audited")["KeyMetadata"]["KeyId"]
    enc = kms.encrypt(KeyId=key, Plaintext=b"audited plaintext")
    calls = [enc, kms.decrypt(CiphertextBlob=enc["CiphertextBlob"]),
             kms.generate_random(NumberOfBytes=8)]
    with pytest.raises(ClientError) as info:  # a failed call names its key too
        kms.describe_key(KeyId="alias/does-not-exist")
    assert code(info) == "NotFoundException"
    ids = [c["ResponseMetadata"]["RequestId"] for c in calls]
    ids.append(info.value.response["ResponseMetadata"]["RequestId"])
    for request_id in ids:
        record = one(server, request_id)
        assert record["userIdentity"]["accessKeyId"] == admin["AccessKeyId"]
        text = json.dumps(record)
        assert admin["SecretAccessKey"] not in text and "audited plaintext" not in text
        assert "Signature=" not in text
    assert one(server, ids[-1])["errorCode"] == "NotFoundException"


# --- 2. refused before dispatch ---------------------------------------------------------------
@pytest.mark.parametrize(("target", "copied"), [
    ("TrentService.Foo", "TrentService.Foo"),
    ("TrentService.EncryptEverything", "TrentService.EncryptEverything"),
    ("Trent Service.Encrypt", "(malformed)"),
], ids=["unknown", "unknown-long", "malformed-target"])
def test_unknown_operations_are_audited_without_the_body(
        server: LiveServer, admin: dict[str, Any], target: str, copied: str) -> None:
    body = json.dumps({"KeyId": "alias/x", "Plaintext": SECRET_MARK}).encode()
    resp = post(server, signed(server, admin, target, body))
    assert aws_error(resp)[:2] == (400, "UnknownOperationException")
    record = one(server, resp.headers["x-request-id"])
    assert record["eventName"] == "UnknownOperation"
    assert record["errorCode"] == "UnknownOperationException"
    assert record["requestParameters"] == {"target": copied}
    assert record["userIdentity"]["accessKeyId"] == admin["AccessKeyId"]
    assert SECRET_MARK not in json.dumps(record)


@pytest.mark.parametrize(("body", "headers", "error"), [
    (b'{"NumberOfBytes": 8, "Plaintext": "' + SECRET_MARK.encode() + b'"',
     None, "SerializationException"),
    (b'{"Plaintext": "' + SECRET_MARK.encode() + b'"}', {"Content-Type": "text/plain"},
     "SerializationException"),
], ids=["not-json", "wrong-content-type"])
def test_bodies_refused_before_dispatch_are_audited_under_the_operation(
        server: LiveServer, admin: dict[str, Any], body: bytes,
        headers: dict[str, str] | None, error: str) -> None:
    resp = post(server, signed(server, admin, "TrentService.GenerateRandom", body,
                               headers=headers))
    assert aws_error(resp)[:2] == (400, error)
    record = one(server, resp.headers["x-request-id"])
    assert (record["eventName"], record["errorCode"]) == ("GenerateRandom", error)
    assert record["userIdentity"]["accessKeyId"] == admin["AccessKeyId"]
    assert SECRET_MARK not in json.dumps(record)


def _skewed(server: LiveServer, admin: dict[str, Any], body: bytes,
            monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes, dict[str, str]]:
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: real() - datetime.timedelta(minutes=7))
    try:
        return signed(server, admin, "TrentService.Encrypt", body)
    finally:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", real)


@pytest.mark.parametrize("case", ["bad-signature", "unknown-key", "clock-skew",
                                  "missing-token"])
def test_refusals_before_dispatch_are_audited_with_the_aws_error(
        server: LiveServer, admin: dict[str, Any], case: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"KeyId": "alias/x", "Plaintext": SECRET_MARK}).encode()
    if case == "bad-signature":
        request = signed(server, admin, "TrentService.Encrypt", body, secret="y" * 40)
        error, key_id = "InvalidSignatureException", admin["AccessKeyId"]
    elif case == "unknown-key":
        request = signed(server, {"AccessKeyId": "AKIAZZZZZZZZZZZZZZZZ",
                                  "SecretAccessKey": "z" * 40}, "TrentService.Encrypt", body)
        error, key_id = "UnrecognizedClientException", "AKIAZZZZZZZZZZZZZZZZ"
    elif case == "clock-skew":
        request = _skewed(server, admin, body, monkeypatch)
        error, key_id = "InvalidSignatureException", admin["AccessKeyId"]
    else:  # a long-term key presented with a session token it does not have
        request = signed(server, admin, "TrentService.Encrypt", body,
                         headers={"X-Amz-Security-Token": "forged-token"})
        error, key_id = "UnrecognizedClientException", admin["AccessKeyId"]
    resp = post(server, request)
    status, name, message = aws_error(resp)
    assert (status, name) == (400, error)
    record = one(server, resp.headers["x-request-id"])
    assert record["eventName"] == "Authenticate" and record["errorCode"] == error
    assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": key_id}
    text = json.dumps(record)
    assert SECRET_MARK not in text and admin["SecretAccessKey"] not in text
    assert "forged-token" not in text
    if case == "clock-skew":
        assert "Signature expired" in record["errorMessage"]


@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "copied"), [("Foo", "Foo"),
                                                   ("Foo Bar", "(malformed)")])
async def test_unknown_operation_through_the_service_is_audited(
        tmp_path: Path, operation: str, copied: str) -> None:
    """KMS.call itself (the CLI's path, not only the wire's) audits an unknown operation."""
    from bastion.kms.errors import KMSError
    from tests.conftest import make_settings
    from tests.kms.conftest import admin_caller

    p = await open_provider(make_settings(tmp_path, None))
    try:
        with pytest.raises(KMSError) as info:
            await p.kms.call(operation, {"Plaintext": SECRET_MARK}, admin_caller(p))
        assert info.value.code == "UnknownOperationException"
        await p.audit.flush()
        row = await p.fast.one("SELECT body FROM audit_events WHERE event_name = "
                               "'UnknownOperation'")
    finally:
        await p.close()
    assert row is not None
    record = json.loads(bytes(row[0]))
    assert record["requestParameters"] == {"operation": copied}
    assert record["errorCode"] == "UnknownOperationException"
    assert SECRET_MARK not in json.dumps(record)


# --- 2b. a flood of bad signatures is counted, not written one by one ------------------------
def test_a_flood_of_bad_signatures_is_bounded_and_summarised(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Per source: 30 records at once, then one a second; the rest are counted and written
    as one summary (errorCode Throttled) a few seconds later; counts add up."""
    for server in start_live_server(tmp_path_factory.mktemp("kms-flood"),
                                    env_over={"BASTION_ACCESS_KEY_CACHE_TTL": "0"}):
        server.add_user("flooded")
        key = server.cli("iam", "access-keys", "create", "--user", "flooded")
        sent = 200
        start = time.monotonic()
        with server.http() as http:
            for i in range(sent):
                url, body, headers = signed(server, key, "TrentService.GenerateRandom",
                                            b'{"NumberOfBytes": %d}' % (i % 64 + 1),
                                            secret="w" * 40)
                assert http.post(url, content=body, headers=headers).status_code == 400
        elapsed = time.monotonic() - start
        deadline = time.monotonic() + 20
        while True:  # the summaries come within summary_every (5 s) of the refusals
            found = records(server, event="Authenticate", outcome="failure")
            written = [r for r in found if r["errorCode"] == "InvalidSignatureException"]
            summary = [r for r in found if r["errorCode"] == "Throttled"]
            suppressed = sum(r["additionalEventData"]["suppressed"] for r in summary)
            if len(written) + suppressed >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        # the bound: the burst plus one a second (plus one for a refill at the edge)
        assert 30 <= len(written) <= 30 + math.ceil(elapsed) + 1, (len(written), elapsed)
        assert len(written) + suppressed == sent and summary
        first = summary[0]["additionalEventData"]
        assert first["service"] == "kms" and first["sources"][0]["source"] == "127.0.0.1"
        assert first["sources"][0]["errorCodes"] == [{"errorCode": "InvalidSignatureException",
                                                      "count": first["sources"][0]["count"]}]
        assert key["SecretAccessKey"] not in json.dumps(found)


@pytest.mark.anyio
async def test_refusal_budget_per_source_and_overall() -> None:
    """The budget on its own clock: per source, across sources, and the summary."""
    emitted: list[tuple[str, dict[str, Any]]] = []

    class Sink:
        async def emit(self, event_name: str, **fields: Any) -> None:
            emitted.append((event_name, fields))

    now = [1000.0]
    budget = RefusalAudit(Sink(), service="kms", per_source_rate=1, per_source_burst=3,
                          rate=2, burst=5, summary_every=3600, clock=lambda: now[0])
    for _ in range(10):
        await budget.refused("Authenticate", "192.0.2.1", "InvalidSignatureException")
    assert len(emitted) == 3 and budget.suppressed_total == 7
    for i in range(10):  # other sources: the overall bucket has 2 left
        await budget.refused("Authenticate", f"192.0.2.{i + 10}", "UnrecognizedClient")
    assert len(emitted) == 5
    now[0] += 1.0  # one second: one per source, two overall
    await budget.refused("Authenticate", "192.0.2.1", "InvalidSignatureException")
    assert emitted[-1][1]["additional"] == {"suppressedBefore": 7}
    await budget.write_summary()
    name, fields = emitted[-1]
    assert name == "Authenticate" and fields["error_code"] == "Throttled"
    assert fields["additional"]["suppressed"] == 8  # 8 other sources' refusals were counted
    await budget.close()  # nothing left: no empty summary
    assert emitted[-1][0] == name and len(emitted) == 7
    # an IPv6 host is one /64; a v4-mapped address is its IPv4 address
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff") == "2001:db8::/64"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7" and source_key(None) == "unknown"
    if budget._flusher is not None:
        budget._flusher.cancel()


# --- 3. migrate-root ----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_migrate_root_is_audited_at_start_and_end(
        tmp_path: Path, database_url: str, softhsm: dict[str, str]) -> None:
    over = hsm_over(softhsm, "root-" + secrets.token_hex(4))
    old, new = both(tmp_path, database_url, over)
    await _reset(old.effective_database_url)
    await populate(old)
    p = await open_provider(old)
    target = open_root_keeper(new)
    who = {"type": "LocalOperator", "principalId": "tester"}
    try:
        materials = [bytes(r[0]) for r in await p.fast.all(
            "SELECT material FROM kms_key_versions")]
        before = await p.fast.one("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
        report = await migrate_root(p.kms.fast, p.kms.keeper, target, audit=p.audit,
                                    user_identity=who)
        with pytest.raises(MigrationError):  # the same keeper again: refused and audited
            await migrate_root(p.kms.fast, target, target, audit=p.audit,
                               user_identity=who)
        await p.audit.flush()
        rows = await p.fast.all("SELECT body FROM audit_events WHERE seq > :s AND "
                                "event_name = 'MigrateRoot' ORDER BY seq", s=before[0])
        got = [json.loads(bytes(r[0])) for r in rows]
    finally:
        target.close()
        await p.close()
    assert [r["additionalEventData"]["phase"] for r in got] == ["start", "complete", "start",
                                                                "failed"]
    start, done, _, failed = got
    assert start["requestParameters"] == {"rootKeeper": {"from": "file", "to": "pkcs11"}}
    assert start["responseElements"] == {"keyVersions": report.versions,
                                         "wrappedBySource": report.versions}
    assert done["responseElements"] == {"keyVersions": report.versions,
                                        "staged": report.staged,
                                        "switched": report.switched,
                                        "dropped": report.dropped}
    assert "errorCode" not in done and start["userIdentity"] == who
    assert failed["errorCode"] == "MigrationError" and "already" in failed["errorMessage"]
    text = json.dumps(got)
    assert softhsm["pin"] not in text
    for material in materials:  # no wrapping in any encoding
        assert b64(material) not in text and material.hex() not in text


def test_cli_migrate_root_writes_start_and_end_records(tmp_path: Path,
                                                       softhsm: dict[str, str]) -> None:
    env = {**os.environ, "BASTION_PKCS11_MODULE": softhsm["module"],
           "BASTION_PKCS11_TOKEN_LABEL": softhsm["token"],
           "BASTION_PKCS11_PIN": softhsm["pin"],
           "BASTION_PKCS11_KEY_LABEL": "cli-" + secrets.token_hex(4)}
    assert run("kms", "create-key", data=tmp_path, env=env).returncode == 0
    r = run("kms", "migrate-root", "--to", "pkcs11", data=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    out = run("audit", "search", "--event", "MigrateRoot", data=tmp_path,
              env={**env, "BASTION_ROOT_KEEPER": "pkcs11"})
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert [g["additionalEventData"]["phase"] for g in got] == ["start", "complete"]
    assert got[0]["userIdentity"]["type"] == "LocalOperator"
    assert got[1]["responseElements"]["switched"] == 2  # and the secrets key
    assert softhsm["pin"] not in out.stdout


# --- 2c. bodies refused for their size; refusals counted just before shutdown ----------------
FAKE_KEY_ID = "AKIAOVERSIZEDBODY123"


def _claimed_auth(key_id: str = FAKE_KEY_ID) -> str:
    """An Authorization header of the right shape (it is never verified: the body is not
    read)."""
    return (f"AWS4-HMAC-SHA256 Credential={key_id}/20260101/us-east-1/kms/aws4_request, "
            f"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={'0' * 64}")


@pytest.mark.anyio
async def test_oversized_bodies_are_audited_like_sigv4_refusals(tmp_path: Path) -> None:
    """A 413 (declared or streamed past kms_api_max_body) is an ``Authenticate`` record
    through the refusal budget: the claimed access key id and target, never the body."""
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from bastion.edge.request import RequestContext
    from bastion.kms.api import KmsAPI
    from tests.conftest import make_settings

    p = await open_provider(make_settings(tmp_path, None, kms_api_max_body=4096))
    ids: dict[str, str] = {}
    try:
        app = Starlette(routes=KmsAPI(p).routes(), middleware=[Middleware(RequestContext)])
        transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://kms.test") as http:
            big = b'{"Plaintext": "' + SECRET_MARK.encode() + b" " * 5000 + b'"}'

            async def streamed() -> Any:
                yield b'{"Plaintext": "' + SECRET_MARK.encode()
                for _ in range(3):
                    yield b" " * 2000
                yield b'"}'

            cases: dict[str, tuple[Any, dict[str, str]]] = {
                "declared": (big, {"X-Amz-Target": "TrentService.Encrypt",
                                   "Authorization": _claimed_auth()}),
                "streamed": (streamed(), {"X-Amz-Target": "TrentService.Encrypt",
                                          "Authorization": _claimed_auth()}),
                "anonymous-malformed-target": (big, {"X-Amz-Target": "Trent Service.X"}),
            }
            for name, (content, headers) in cases.items():
                resp = await http.post("/kms", content=content, headers=headers)
                assert aws_error(resp)[:2] == (413, "ValidationException"), name
                ids[name] = resp.headers["x-request-id"]
        await p.audit.flush()
        rows = await p.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                "'Authenticate' ORDER BY seq")
    finally:
        await p.close()
    got = {r["requestID"]: r for r in (json.loads(bytes(row[0])) for row in rows)}
    for name, request_id in ids.items():
        record = got[request_id]
        assert record["errorCode"] == "ValidationException", name
        assert record["additionalEventData"]["reason"] == "BodyTooLarge"
        assert record["sourceIPAddress"] == "192.0.2.9"
        if name == "anonymous-malformed-target":
            assert record["userIdentity"] == {"type": "Unknown"}
            assert record["requestParameters"] == {"target": "(malformed)"}
        else:
            assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": FAKE_KEY_ID}
            assert record["requestParameters"] == {"target": "TrentService.Encrypt"}
    text = json.dumps(list(got.values()))
    assert SECRET_MARK not in text and "0" * 64 not in text


@pytest.mark.anyio
async def test_refusals_counted_just_before_shutdown_are_in_the_trail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The served app's lifespan shutdown writes the refusal budget's last summary before
    the audit trail closes (not 5 s later, into a closed trail)."""
    import asyncio
    import gc

    import httpx

    from bastion.app import BastionServer
    from tests.conftest import make_settings

    monkeypatch.setattr(gc, "freeze", lambda: None)  # not this test process's heap
    settings = make_settings(tmp_path, None)
    server = BastionServer(settings)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.ensure_future(server({"type": "lifespan", "asgi": {"version": "3.0"}},
                                            inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    burst = 30  # kms/refusals.py: per source, records written at once before counting
    transport = httpx.ASGITransport(app=server, client=("192.0.2.44", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://kms.test") as http:
        for _ in range(burst + 3):
            resp = await http.post("/kms", content=b"{}", headers={
                "X-Amz-Target": "TrentService.ListKeys",
                "Content-Type": "application/x-amz-json-1.1"})
            assert aws_error(resp)[:2] == (400, "MissingAuthenticationTokenException")
    await inbox.put({"type": "lifespan.shutdown"})
    assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
    await lifespan
    p = await open_provider(settings)
    try:
        rows = await p.fast.all("SELECT body FROM audit_events WHERE event_name = "
                                "'Authenticate' ORDER BY seq")
    finally:
        await p.close()
    records = [json.loads(bytes(r[0])) for r in rows]
    written = [r for r in records if r["errorCode"] == "MissingAuthenticationTokenException"]
    summaries = [r["additionalEventData"] for r in records if r["errorCode"] == "Throttled"]
    assert len(written) == burst
    assert [(s["service"], s["suppressed"], s["sources"]) for s in summaries] == [
        ("kms", 3, [{"source": "192.0.2.44", "count": 3, "errorCodes": [
            {"errorCode": "MissingAuthenticationTokenException", "count": 3}]}])]
