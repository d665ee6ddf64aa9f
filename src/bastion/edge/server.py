"""Flood protection at the server layer: a uvicorn HTTP/1.1 protocol (``httptools``, llhttp
in strict mode) with the deadlines and caps that ASGI middleware comes too late for.

    uvicorn.run(app, host=..., port=..., **server_options(settings))

ASGI middleware runs once a request's head is complete, so it cannot see a client that
sends its headers a byte at a time (slowloris), a body a byte at a time (R.U.D.Y.), or
thousands of headers; uvicorn itself has no header deadline (its keep-alive timer is
cancelled by any byte). :class:`GuardedProtocol` adds, per connection:

- a deadline for the request line and headers (``header_timeout``, counted from the
  connection's start, or from the first byte of a further request on a kept-alive
  connection), then ``408`` and close;
- an idle deadline between requests on a kept-alive connection (``keepalive_timeout``,
  not reset by bytes that do not start a request);
- a minimum body rate: after ``body_timeout`` seconds, at least ``body_min_rate`` bytes a
  second on average, and never ``body_timeout`` seconds without a byte (while the
  application is not reading, the clock stops), else ``408`` and close; a client that
  does not read its response for ``body_timeout`` seconds is disconnected;
- caps on header count and size (``431``), URL length (``414``) and body size (``413``
  before reading when ``Content-Length`` declares more; close when a chunked body grows
  past it);
- RFC 9112 §6.3: ``Content-Length`` together with ``Transfer-Encoding``, or more than one
  ``Content-Length``, is ``400`` and close (request smuggling); llhttp's strict parser
  refuses the rest of malformed HTTP (bad chunk sizes, obs-fold, bare CR...) with ``400``;
- ``Upgrade`` is ignored (RFC 9110 §7.8) and ends the connection after the response; an
  upgrade request with a body is ``400`` (llhttp does not parse past its head);
- per-client-IP and total caps on concurrent connections: beyond them a new connection
  gets ``503`` and is closed at once (trusted proxies are exempt from the per-IP cap: they
  carry many clients).

On TLS connections every request's scope carries the ASGI TLS extension
(``scope["extensions"]["tls"]``, :func:`bastion.edge.tls.tls_extension`).

Every refusal is logged (peer address and reason, never headers or bodies; under a flood
the first of each second, then one summary line), counted in an
:class:`~bastion.edge.counters.EdgeCounters` and audited in aggregate (``ConnectionRefused``:
no request, hence no request id, exists yet). After a refusal the connection is half-closed
and further input discarded for a moment, so the client reads the answer before the close
(no reset); then it is closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion.edge.clientip import TrustedProxies
from bastion.edge.counters import COUNTERS, EdgeCounters
from bastion.edge.tls import tls_extension

log = logging.getLogger("bastion.edge.server")
LINGER = 2.0  # seconds input is discarded after a refusal, before the close
HEAD_SLACK = 1024  # request line beyond the URL, CRLFs


@dataclass(frozen=True)
class ServerLimits:
    """The server layer's deadlines (seconds) and caps; see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 20.0
    body_min_rate: int = 500
    keepalive_timeout: float = 5.0
    max_header_count: int = 100
    max_header_bytes: int = 16 * 1024
    max_url_bytes: int = 8 * 1024
    max_request_body_bytes: int = 1024 ** 3
    max_connections_per_ip: int = 100
    max_connections: int = 4096

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keepalive_timeout"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name} must be in (0, 3600] seconds")
        for name in ("body_min_rate", "max_header_count", "max_header_bytes",
                     "max_url_bytes", "max_request_body_bytes", "max_connections_per_ip",
                     "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> ServerLimits:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


class ConnectionTable:
    """Open connections per client IP and in total, for one process."""

    def __init__(self) -> None:
        self.per_ip: dict[str, int] = {}
        self.total = 0

    def admit(self, ip: str, limits: ServerLimits, *, exempt: bool) -> str | None:
        """Take a slot, or the reason there is none."""
        if self.total >= limits.max_connections:
            return "connection_cap"
        held = self.per_ip.get(ip, 0)
        if not exempt and held >= limits.max_connections_per_ip:
            return "ip_connection_cap"
        self.per_ip[ip] = held + 1
        self.total += 1
        return None

    def release(self, ip: str) -> None:
        held = self.per_ip.get(ip, 0) - 1
        if held > 0:
            self.per_ip[ip] = held
        else:
            self.per_ip.pop(ip, None)
        self.total -= 1


class _Refusal(Exception):
    """Raised inside a parser callback: llhttp stops, ``data_received`` answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the server layer's limits (module docstring).
    Configured by :func:`protocol_class`, which binds the class attributes below."""

    limits: ClassVar[ServerLimits] = ServerLimits()
    counters: ClassVar[EdgeCounters] = COUNTERS
    table: ClassVar[ConnectionTable] = ConnectionTable()
    proxies: ClassVar[TrustedProxies | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ip = "-"
        self._counted = False
        self._closing = False  # refused: discarding input until the close
        self._deaf = False  # an upgrade was ignored: no further request is read
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._phase = "idle"  # of the parser: idle (between requests), head, body
        self._fresh = True  # no request head completed yet on this connection
        self._messages = 0
        self._raw_head = 0  # bytes received while in the head (bounds llhttp's buffers)
        self._head_bytes = 0  # header fields completed, exactly
        self._header_count = 0
        self._url_bytes = 0
        self._body_bytes = 0
        self._body_t0 = 0.0
        self._body_base = 0
        self._body_last = 0.0
        self._tls: dict[str, Any] | None = None  # the ASGI TLS extension (edge/tls.py)

    # --- connection --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._ip = str(self.client[0]) if self.client else "-"
        self._tls = tls_extension(transport)
        exempt = self.proxies is not None and self.proxies.trusts(self._ip)
        reason = self.table.admit(self._ip, self.limits, exempt=exempt)
        if reason is not None:
            self._refuse(503, reason, linger=False)  # no fd kept for the over-cap
            return
        self._counted = True
        self.counters.connections += 1
        self._arm(self.limits.header_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._counted:
            self._counted = False
            self.table.release(self._ip)
            self.counters.connections -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._deaf:
            return  # refused, or past an ignored upgrade: the rest is dropped
        self._unset_keepalive_if_required()
        before, messages = self._phase, self._messages
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # RFC 9110 §7.8: the upgrade is ignored (no WebSocket, no h2c); llhttp stopped
            # parsing at the end of the head, so this response is the connection's last
            log.debug("ignored an upgrade request from %s", self._ip)
            self._deaf = True
            if self.cycle is not None:
                self.cycle.keep_alive = False
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refusal):
                self._refuse(cause.status, cause.reason)
            else:
                self._refuse(400, "malformed", detail=str(exc)[:100])
            return
        if self._phase == "head" and (
                (before == "head" and self._messages == messages)
                or (before == "idle" and self._messages == messages + 1)):
            self._raw_head += len(data)
            if self._raw_head > self.limits.max_header_bytes + self.limits.max_url_bytes \
                    + HEAD_SLACK:
                self._refuse(431, "headers_too_large")

    # --- parser callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:  # a copy per request: the application may change it
            tls: dict[object, object] = {k: v for k, v in self._tls.items()}
            tls["client_cert_chain"] = list(self._tls["client_cert_chain"])
            self.scope["extensions"] = {"tls": tls}
        self._messages += 1
        self._phase = "head"
        self._raw_head = self._head_bytes = self._header_count = self._url_bytes = 0
        if not self._fresh:  # a fresh connection's deadline runs from its start
            self._arm(self.limits.header_timeout, self._head_timeout)

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            raise _Refusal(414, "url_too_long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > self.limits.max_header_count:
            raise _Refusal(431, "too_many_headers")
        if self._head_bytes > self.limits.max_header_bytes:
            raise _Refusal(431, "headers_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel()
        self._fresh = False
        lengths = [v for n, v in self.headers if n == b"content-length"]
        chunked = any(n == b"transfer-encoding" for n, _ in self.headers)
        if len(lengths) > 1 or (lengths and chunked):  # RFC 9112 §6.3 (3), (5)
            raise _Refusal(400, "ambiguous_length")
        declared = int(lengths[0]) if lengths and lengths[0].isdigit() else 0
        if declared > self.limits.max_request_body_bytes:
            raise _Refusal(413, "body_too_large")
        if self.parser.should_upgrade() and (chunked or declared > 0):
            # llhttp does not parse the body of an upgrade request: refused, not lost
            raise _Refusal(400, "upgrade_with_body")
        self._body_bytes = 0
        if chunked or declared > 0:
            self._phase = "body"
            now = self.loop.time()
            self._body_t0, self._body_base, self._body_last = now, 0, now
            self._arm(self.limits.body_timeout, self._body_check)
        else:
            self._phase = "idle"
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._body_last = self.loop.time()
        if self._body_bytes > self.limits.max_request_body_bytes:
            raise _Refusal(413, "body_too_large")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = "idle"
        self._cancel()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (self._phase == "idle" and not self.pipeline and not self.transport.is_closing()
                and (self.cycle is None or self.cycle.response_complete)):
            self._arm(self.limits.keepalive_timeout, self._keepalive_timeout)

    # --- writing -----------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.body_timeout,
                                                     self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # --- deadlines ---------------------------------------------------------------------
    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel()
        self._timer = self.loop.call_later(delay, callback)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        self._refuse(408, "header_timeout", answer=self._phase == "head")

    def _keepalive_timeout(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()  # an idle kept-alive connection: not a refusal

    def _body_check(self) -> None:
        self._timer = None
        limits, now = self.limits, self.loop.time()
        if self.flow.read_paused:  # the application is not reading: not the client's fault
            self._body_t0, self._body_base, self._body_last = now, self._body_bytes, now
            self._arm(limits.body_timeout, self._body_check)
            return
        got = self._body_bytes - self._body_base
        idle_deadline = self._body_last + limits.body_timeout
        rate_deadline = self._body_t0 + limits.body_timeout + got / limits.body_min_rate
        deadline = min(idle_deadline, rate_deadline)
        if now >= deadline:
            self._refuse(408, "body_too_slow")
            return
        self._arm(max(deadline - now, 0.05), self._body_check)

    def _write_stalled(self) -> None:
        self._write_timer = None
        self._refuse(408, "response_not_read", answer=False)

    # --- refusing ----------------------------------------------------------------------
    def _refuse(self, status: int, reason: str, *, answer: bool = True, linger: bool = True,
                detail: str = "") -> None:
        if self._closing or self.transport.is_closing():
            return
        self._closing = True
        self._cancel()
        first = self.counters.refused("server", reason, self._ip)
        log.log(logging.INFO if first else logging.DEBUG, "refused %s: %s %s%s", self._ip,
                status, reason, f" ({detail})" if detail else "")
        cycle = self.cycle
        if cycle is not None and cycle.response_started and self._phase == "body":
            answer = False  # this request was answered already (before its body was read)
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                answer = False  # an answer cannot be interleaved with a response
            cycle.keep_alive = False
            cycle.disconnected = True  # the application sees the client gone
            cycle.message_event.set()
        if answer:
            self.transport.write(self._answer(status))
        if answer and linger and self.transport.can_write_eof():
            # lingering close: the client reads the answer before the connection goes
            self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def _answer(self, status: int) -> bytes:
        phrase = HTTPStatus(status).phrase
        body = f"{phrase}\n".encode()
        lines = [f"HTTP/1.1 {status} {phrase}".encode()]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [b"content-type: text/plain; charset=utf-8",
                  b"content-length: " + str(len(body)).encode(),
                  b"cache-control: no-store", b"connection: close"]
        if status == 503:
            lines.append(b"retry-after: 1")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def protocol_class(limits: ServerLimits, *, counters: EdgeCounters | None = None,
                   trusted_proxies: TrustedProxies | None = None) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` bound to ``limits``, ``counters`` (default
    :data:`~bastion.edge.counters.COUNTERS`) and a connection table of its own, for
    uvicorn's ``http=`` option."""
    attrs = {"limits": limits, "counters": counters or COUNTERS, "table": ConnectionTable(),
             "proxies": trusted_proxies if trusted_proxies else None}
    return type("BastionHttpProtocol", (GuardedProtocol,), attrs)


def server_options(settings: Any, *, counters: EdgeCounters | None = None) -> dict[str, Any]:
    """uvicorn options enforcing the settings' flood protection (``uvicorn.run(app, ...,
    **server_options(settings))``): the guarded protocol, its keep-alive timeout, no
    WebSocket, no proxy headers (``RequestContext`` reads them, from trusted proxies)."""
    limits = ServerLimits.from_settings(settings)
    proxies = TrustedProxies(settings.trusted_proxies, header=settings.trusted_proxy_header)
    return {"http": protocol_class(limits, counters=counters, trusted_proxies=proxies),
            "timeout_keep_alive": max(1, math.ceil(limits.keepalive_timeout)),
            "ws": "none", "proxy_headers": False}
