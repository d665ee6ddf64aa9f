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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bastion.audit.record import to_ocsf
from bastion.store.fast import FastStore

log = logging.getLogger("bastion.audit.sinks")
BATCH = 500
Deliver = Callable[[list[bytes]], Any]


def _format(bodies: list[bytes], ocsf: bool) -> list[str]:
    if not ocsf:
        return [b.decode("ascii") for b in bodies]
    return [json.dumps(to_ocsf(json.loads(b)), sort_keys=True) for b in bodies]


class Sink:
    def __init__(self, spec: str, store: FastStore, state_dir: Path, *, ocsf: bool,
                 poll: float = 0.5) -> None:
        self.spec = spec
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
            body = "[" + ",".join(lines) + "]"
            r = await self._client.post(self.spec, content=body,
                                        headers={"content-type": "application/json"})
            r.raise_for_status()

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
                log.warning("audit sink %s: %s; retrying from seq %d",
                            self.spec.split("?")[0], type(exc).__name__, after + 1)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._syslog is not None:
            with contextlib.suppress(Exception):
                self._syslog.close()


def parse_sinks(value: str) -> list[str]:
    specs = [s.strip() for s in value.split(",") if s.strip()]
    for spec in specs:
        if spec in ("stdout", "syslog") or spec.startswith(("syslog:", "https://",
                                                             "http://")):
            continue
        raise ValueError(f"unknown audit sink {spec!r}: stdout, syslog[:host:port] or a URL")
    return specs
