"""Streaming the trail out: every record reaches stdout, syslog (UDP) and a webhook exactly
once and in order, through destination failures and restarts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bastion.audit.sinks import SIGNATURE_HEADER, Sink, parse_sinks, sign_body
from bastion.config import ConfigError, load_settings

pytestmark = pytest.mark.anyio


async def emit(provider: Any, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await provider.audit.emit("GetOrder", request_parameters={"orderId": f"o{i}"})


async def until(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - the sink signals only through its cursor file
            await asyncio.sleep(0.02)


def order_ids(lines: list[str]) -> list[str]:
    return [json.loads(line)["requestParameters"]["orderId"] for line in lines]


SECRET = b"webhook-secret-for-tests"


def check_signature(headers: Any, body: bytes) -> None:
    """What a receiver does: recompute the HMAC over "<t>." + body, compare in constant
    time, and refuse a timestamp outside its tolerance."""
    fields = dict(part.split("=", 1) for part in headers[SIGNATURE_HEADER].split(","))
    assert abs(int(fields["t"]) - time.time()) < 300
    expected = hmac.new(SECRET, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)


async def test_webhook_gets_every_record_once_in_order_through_failures(provider, tmp_path):
    received: list[str] = []
    failures = [2]  # the first two POSTs fail
    bad_signatures: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            try:
                check_signature(self.headers, body)
            except (AssertionError, KeyError, ValueError) as exc:
                bad_signatures.append(repr(exc))
            if failures[0] > 0:
                failures[0] -= 1
                self.send_response(503)
            else:
                received.extend(json.dumps(r, sort_keys=True, separators=(",", ":"))
                                for r in json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ingest"
    sink = Sink(url, provider.fast, tmp_path / "sinks", ocsf=False, poll=0.01,
                secret=SECRET, allow_http_loopback=True)
    task = asyncio.create_task(sink.run())
    try:
        await until(sink.cursor_file.exists)
        await emit(provider, 30)
        await until(lambda: len(received) >= 30)
        assert order_ids(received) == [f"o{i}" for i in range(30)]
        assert bad_signatures == []
    finally:
        task.cancel()
        await sink.close()
        server.shutdown()


async def test_syslog_udp_and_ocsf(provider, tmp_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    sink = Sink(f"syslog:127.0.0.1:{port}", provider.fast, tmp_path / "sinks", ocsf=True,
                poll=0.01)
    task = asyncio.create_task(sink.run())
    try:
        await until(sink.cursor_file.exists)
        await emit(provider, 3)
        messages = [await asyncio.to_thread(sock.recv, 65536) for _ in range(3)]
    finally:
        task.cancel()
        await sink.close()
        sock.close()
    events = [json.loads(m.decode().split(">", 1)[1].rstrip("\x00")) for m in messages]
    assert [e["class_uid"] for e in events] == [6003] * 3
    assert all(m.startswith(b"<") for m in messages)  # syslog priority (authpriv.info)


async def test_stdout_resumes_from_its_cursor_after_a_restart(provider, tmp_path, capsys):
    state = tmp_path / "sinks"
    sink = Sink("stdout", provider.fast, state, ocsf=False, poll=0.01)
    task = asyncio.create_task(sink.run())
    await until(sink.cursor_file.exists)
    base = int(sink.cursor_file.read_text())  # a new sink starts at the end of the trail
    await emit(provider, 5)
    await until(lambda: int(sink.cursor_file.read_text()) >= base + 5)
    task.cancel()
    await emit(provider, 4, start=5)  # written while the sink is down
    again = Sink("stdout", provider.fast, state, ocsf=False, poll=0.01)
    task = asyncio.create_task(again.run())
    await until(lambda: int(again.cursor_file.read_text()) >= base + 9)
    task.cancel()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert order_ids(lines) == [f"o{i}" for i in range(9)]


@pytest.mark.parametrize("spec", ["stdout", "syslog", "syslog:10.0.0.1:514",
                                  "https://siem.example/ingest", "stdout, syslog"])
def test_valid_specs(spec):
    assert parse_sinks(spec)


@pytest.mark.parametrize("spec", ["file:/tmp/x", "ftp://x", "kafka"])
def test_unknown_sink_is_a_config_error(spec, tmp_path):
    with pytest.raises(ConfigError, match="unknown audit sink"):
        load_settings(data_dir=tmp_path, audit_sinks=spec)


# --- webhook transport security -------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    "http://siem.example/ingest", "http://10.0.0.1/ingest", "http://127.0.0.1.nip.io/x",
    "http://[::2]/x",
], ids=["http-name", "http-private-ip", "http-name-looking-like-loopback", "http-ipv6"])
def test_plain_http_webhook_is_refused(spec, tmp_path):
    """Before, any http:// URL was accepted and records crossed the network in clear."""
    with pytest.raises(ValueError, match="plain http is refused"):
        parse_sinks(spec)
    with pytest.raises(ValueError, match="plain http is refused"):
        parse_sinks(spec, allow_http_loopback=True)
    with pytest.raises(ConfigError, match="plain http is refused"):
        load_settings(data_dir=tmp_path, audit_sinks=spec, audit_sink_secret="s" * 32,
                      audit_sink_allow_http_loopback=True)


@pytest.mark.parametrize("spec", ["http://127.0.0.1:8080/x", "http://localhost/x",
                                  "http://[::1]:9/x"])
def test_http_to_loopback_only_when_allowed(spec, tmp_path):
    with pytest.raises(ValueError, match="plain http is refused"):
        parse_sinks(spec)
    assert parse_sinks(spec, allow_http_loopback=True) == [spec]
    assert load_settings(data_dir=tmp_path, audit_sinks=spec, audit_sink_secret="s" * 32,
                         audit_sink_allow_http_loopback=True).audit_sinks == spec


@pytest.mark.parametrize("secret", [None, "short"], ids=["missing", "too-short"])
def test_webhook_without_a_secret_is_a_config_error(tmp_path, secret):
    """Before, webhook bodies were sent unsigned: a receiver could not tell them from a
    forgery."""
    with pytest.raises(ConfigError, match="audit_sink_secret"):
        load_settings(data_dir=tmp_path, audit_sinks="https://siem.example/ingest",
                      audit_sink_secret=secret)


async def test_webhook_sink_without_a_secret_cannot_be_built(provider, tmp_path):
    with pytest.raises(ValueError, match="secret"):
        Sink("https://siem.example/ingest", provider.fast, tmp_path, ocsf=False)


def test_signature_is_hmac_sha256_over_timestamp_and_body():
    body = b'[{"eventName":"Login"}]'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_body(b"k" * 16, body, 1_700_000_000) == f"t=1700000000,v1={expected}"
    assert sign_body(b"k" * 16, body + b" ", 1_700_000_000) != \
        sign_body(b"k" * 16, body, 1_700_000_000)
    assert sign_body(b"k" * 16, body, 1_700_000_001) != \
        sign_body(b"k" * 16, body, 1_700_000_000)


async def test_webhook_failures_never_log_url_credentials(provider, tmp_path, caplog):
    """Before, the warning logged the URL up to '?', user info and all."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = f"http://bob:hunter2-pass@127.0.0.1:{port}/ingest?token=qs-secret#frag"
    sink = Sink(url, provider.fast, tmp_path / "sinks", ocsf=False, poll=0.01,
                secret=SECRET, allow_http_loopback=True)
    caplog.set_level(logging.WARNING, logger="bastion.audit.sinks")
    task = asyncio.create_task(sink.run())
    try:
        await until(sink.cursor_file.exists)
        await emit(provider, 1)
        await until(lambda: any("HTTP 500" in r.getMessage() for r in caplog.records))
    finally:
        task.cancel()
        await sink.close()
        server.shutdown()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert f"http://127.0.0.1:{port}/ingest" in text
    for secret in ("bob", "hunter2", "qs-secret", "token", "frag"):
        assert secret not in text
