"""Streaming the trail out: stdout, syslog, a webhook — as records or OCSF events.

A sink follows the trail by ``seq`` (like ``tail -f``) rather than being handed records in
memory, so a slow or failing destination never holds up a request and never loses a record:
it retries from where it stopped, and its position is kept in
``data_dir/audit-sinks/<name>.cursor`` across restarts. The trail is the source of truth;
a sink is a copy. Run sinks on one instance when several share a database.

Destinations (``BASTION_AUDIT_SINKS``, comma separated):

    stdout                      JSON Lines on standard output
    syslog | syslog:HOST:PORT   one record per message (local /dev/log, or UDP)
    https://…/ingest            POST a JSON array of records per batch; 2xx means delivered

A webhook is https only (plain ``http://`` only to a loopback address, and only with
``audit_sink_allow_http_loopback``), and every body is signed with the configured
``audit_sink_secret``::

    X-Bastion-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." || body)>

so the receiver can check where a batch came from and refuse replays outside its tolerance
(the Stripe webhook scheme). Credentials in a webhook URL are sent but never logged: logs
name the URL without user info, query or fragment.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from bastion.audit.record import to_ocsf
from bastion.edge.http import is_loopback_host
from bastion.store.fast import FastStore

if TYPE_CHECKING:
    from bastion.config import Settings

log = logging.getLogger("bastion.audit.sinks")
BATCH = 500
Deliver = Callable[[list[bytes]], Any]
SIGNATURE_HEADER = "X-Bastion-Signature"


def sign_body(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Bastion-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 over
    "<t>." followed by the body>``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def safe_url(url: str) -> str:
    """A URL fit for a log line: scheme, host, port and path; no user info, query or
    fragment (where credentials hide)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _format(bodies: list[bytes], ocsf: bool) -> list[str]:
    if not ocsf:
        return [b.decode("utf-8") for b in bodies]
    return [json.dumps(to_ocsf(json.loads(b)), sort_keys=True) for b in bodies]


class Sink:
    def __init__(self, spec: str, store: FastStore, state_dir: Path, *, ocsf: bool,
                 poll: float = 0.5, secret: bytes | None = None,
                 allow_http_loopback: bool = False) -> None:
        parse_sinks(spec, allow_http_loopback=allow_http_loopback)
        self.webhook = spec.startswith(("https://", "http://"))
        if self.webhook and not secret:
            raise ValueError("a webhook audit sink needs a secret to sign its bodies "
                             "(audit_sink_secret)")
        self.secret = secret or b""
        self.spec = spec
        self.name = safe_url(spec) if self.webhook else spec
        self.store = store
        self.ocsf = ocsf
        self.poll = poll
        name = hashlib.sha256(spec.encode()).hexdigest()[:16]
        self.cursor_file = state_dir / f"{name}.cursor"
        self.state_dir = state_dir
        self._client: httpx.AsyncClient | None = None
        self._syslog: logging.Handler | None = None

    def _cursor(self) -> int | None:
        try:
            return int(self.cursor_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _save(self, seq: int) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.cursor_file.with_suffix(".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.cursor_file)

    async def _deliver(self, lines: list[str]) -> None:
        if self.spec == "stdout":
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
        elif self.spec.startswith("syslog"):
            if self._syslog is None:
                _, _, target = self.spec.partition(":")
                host, _, port = target.rpartition(":")
                address: Any = (host, int(port)) if target else "/dev/log"
                self._syslog = logging.handlers.SysLogHandler(
                    address=address, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV)
            for line in lines:
                self._syslog.emit(logging.LogRecord("bastion-audit", logging.INFO, "", 0,
                                                    line, None, None))
        else:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=10.0)
            body = ("[" + ",".join(lines) + "]").encode("utf-8")
            signature = sign_body(self.secret, body, int(time.time()))
            r = await self._client.post(self.spec, content=body,
                                        headers={"content-type": "application/json",
                                                 SIGNATURE_HEADER: signature})
            if not r.is_success:  # raise_for_status would carry the URL, credentials and all
                raise SinkRefused(f"HTTP {r.status_code}")

    async def run(self) -> None:
        after = self._cursor()
        if after is None:  # a new sink starts at the end; `bastion audit export` backfills
            row = await self.store.one("SELECT MAX(seq) AS m FROM audit_events")
            after = int(row[0] or 0) if row else 0
            self._save(after)
        delay = self.poll
        while True:
            try:
                rows = await self.store.all("SELECT seq, body FROM audit_events WHERE "
                                            "seq > :s ORDER BY seq LIMIT :n", s=after, n=BATCH)
                if rows:
                    await self._deliver(_format([bytes(r[1]) for r in rows], self.ocsf))
                    after = int(rows[-1][0])
                    self._save(after)
                    delay = self.poll
                    if len(rows) == BATCH:
                        continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the destination or database failed: retry later
                log.warning("audit sink %s: %s; retrying from seq %d", self.name,
                            exc if isinstance(exc, SinkRefused) else type(exc).__name__,
                            after + 1)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._syslog is not None:
            with contextlib.suppress(Exception):
                self._syslog.close()


class SinkRefused(Exception):
    """The destination answered, but not with 2xx."""


def parse_sinks(value: str, *, allow_http_loopback: bool = False) -> list[str]:
    specs = [s.strip() for s in value.split(",") if s.strip()]
    for spec in specs:
        if spec in ("stdout", "syslog") or spec.startswith("syslog:"):
            continue
        if spec.startswith(("https://", "http://")):
            try:
                parts = urlsplit(spec)
                host = parts.hostname
            except ValueError:
                host = None
            if not host:
                raise ValueError(f"audit sink {safe_url(spec)!r} has no host")
            if parts.scheme == "http" and not (allow_http_loopback and is_loopback_host(host)):
                raise ValueError(f"audit sink {safe_url(spec)!r}: plain http is refused; use "
                                 "https (http only to a loopback address, with "
                                 "audit_sink_allow_http_loopback)")
            continue
        shown = safe_url(spec) if "://" in spec else spec
        raise ValueError(f"unknown audit sink {shown!r}: stdout, syslog[:host:port] or an "
                         "https:// URL")
    return specs


def check_sink_settings(settings: Settings) -> None:
    """Settings-time checks: known sinks, https webhooks, and a secret to sign with."""
    specs = parse_sinks(settings.audit_sinks,
                        allow_http_loopback=settings.audit_sink_allow_http_loopback)
    secret = settings.audit_sink_secret
    if any(s.startswith(("https://", "http://")) for s in specs) \
            and (secret is None or len(secret.get_secret_value()) < 16):
        raise ValueError("a webhook audit sink needs audit_sink_secret (at least 16 "
                         "characters) to sign its bodies")


def sink_secret(settings: Settings) -> bytes | None:
    secret = settings.audit_sink_secret
    return secret.get_secret_value().encode("utf-8") if secret is not None else None
