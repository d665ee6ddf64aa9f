"""The reverse proxy's upstream hop: a small HTTP/1.1 client (RFC 9112) with one keep-alive
pool, on asyncio transports and llhttp (``httptools``, strict: no leniency flags set).

    pool = UpstreamPool(max_connections=512, max_idle=128)
    origin = Origin.parse("http://127.0.0.1:9000/v1")
    response = await pool.request(origin, "GET", "/v1/items?x=1", headers, body=None,
                                  content_length=None, connect_timeout=5, read_timeout=30)
    async for chunk in response.body(): ...
    await response.aclose()

Why not httpx: its pool (httpcore) walks every connection for every queued request, which
collapses under concurrency (encode/httpx#3215; a profile of the proxy at 32 connections
spent most of its time in ``_assign_requests_to_connections``). Here a request takes an idle
connection of its origin (last in, first out) or opens one, and gives it back when its
response was read to the end.

What the upstream sends is parsed strictly (no response smuggling, RFC 9112 §6.3 and §11.2):
llhttp refuses ``Content-Length`` together with ``Transfer-Encoding``, differing or malformed
``Content-Length`` values, bad chunk framing and control characters in fields; the header
block is capped (``MAX_HEAD`` bytes, ``MAX_FIELDS`` fields); bytes after the end of a response,
or arriving while a connection is idle, close that connection, which is never reused. A
response to ``HEAD`` closes its connection too (llhttp cannot be told the request method, so
the next response's framing could not be trusted). Response bodies are read at most
``HIGH_WATER`` bytes ahead of the consumer (the socket is paused), request bodies are written
with the transport's flow control: nothing holds a whole body.

Failures are three exceptions: ``UpstreamTimeout`` (connecting, waiting for a free
connection, writing, or waiting for the response head took too long: 504), ``Unavailable``
(the upstream cannot be reached or broke the protocol before its head: 502), ``Broken``
(the response failed after its head: the caller cuts the client off).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote_from_bytes, urlsplit

import httptools

MAX_HEAD = 64 * 1024  # bytes of status line and fields
MAX_FIELDS = 256
HIGH_WATER = 256 * 1024  # response bytes read ahead of the consumer
IDLE_TTL = 30.0  # seconds an idle connection is kept (upstreams close theirs at 60-75 s)
_FORBIDDEN_TARGET = frozenset(range(0x21)) | {0x7F}
_VISIBLE = bytes(range(0x21, 0x7F))  # kept as they are (existing %XX escapes included)


class UpstreamError(Exception):
    """Base of the upstream hop's failures (the message never reaches a client)."""


class UpstreamTimeout(UpstreamError):
    """Connecting, waiting for a connection, writing or waiting for the head timed out."""


class Unavailable(UpstreamError):
    """The upstream cannot be reached or broke HTTP/1.1 before its response head."""


class Broken(UpstreamError):
    """The upstream failed after its response head (timeout, close, bad framing)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a route's requests go: scheme, host, port and the ``Host`` field to send."""

    scheme: str
    host: str
    port: int
    authority: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an upstream is an http(s) URL with a host")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        name = f"[{host}]" if ":" in host else host
        authority = name if port == default else f"{name}:{port}"
        return cls(parts.scheme, host, port, authority.encode("ascii"))


class Response:
    """An upstream response whose head has arrived; read ``body()`` then ``aclose()``."""

    def __init__(self, conn: _Connection, pool: UpstreamPool, status: int,
                 headers: list[tuple[bytes, bytes]], timeout: float) -> None:
        self._conn = conn
        self._pool = pool
        self.status = status
        self.headers = headers  # names lower-case, as received otherwise
        self._timeout = timeout
        self._closed = False

    async def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives (transfer coding removed, content coding kept)."""
        conn = self._conn
        while True:
            chunk = await conn.read_body(self._timeout)
            if chunk is None:
                return
            yield chunk

    def buffered(self) -> list[bytes] | None:
        """The whole body if it has already arrived (a small response usually comes in
        one read), taken from the connection; else None and ``body()`` streams it."""
        conn = self._conn
        if not conn.whole():
            return None
        return list(conn.take())

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.release(self._conn)


class _Connection(asyncio.Protocol):
    """One upstream connection: the llhttp callbacks fill the current response's state."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reusable = True  # cleared by anything unexpected
        self.idle_since = 0.0
        self._active = False  # a request is in flight on this connection
        self._head_size = 0
        self._field_bytes = 0
        self._no_body = False
        self._status = 0
        self._fields: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[None] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._error: UpstreamError | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if not self._active or self._complete:  # bytes nobody asked for: smuggling or junk
            self.close(abort=True)
            return
        if self._head is not None and not self._head.done():
            if self._head_size > MAX_HEAD:  # a head that never ends: bounded before parsing
                self._fail(Unavailable("the upstream's response head is too large"))
                return
            self._head_size += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Unavailable("the upstream switched protocols"))
        except httptools.HttpParserError:
            if self._complete:  # bytes after the response: the response stands, the
                self.close(abort=True)  # connection goes
            else:
                self._fail(Unavailable("the upstream broke HTTP/1.1 framing"))

    def eof_received(self) -> bool | None:
        self.reusable = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._active and not self._complete:
            if exc is None and self._head is not None and self._head.done() and \
                    self._until_close():
                self._complete = True  # RFC 9112 §6.3 (8): the body ends with the connection
                self._wake()
            else:
                self._fail(Unavailable("the upstream closed the connection"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # the next write sees the closed transport

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- llhttp callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:  # a second response to one request: never trusted
            raise Unavailable("bytes after the end of the response")
        self._fields = []
        self._field_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_bytes += len(name) + len(value) + 4
        if len(self._fields) >= MAX_FIELDS or self._field_bytes > MAX_HEAD:
            raise Unavailable("the upstream's response head is too large")
        self._fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:  # no Upgrade is ever forwarded: nothing to switch to
            raise Unavailable("the upstream switched protocols")
        if 100 <= status < 200:  # interim (103 Early Hints): skipped
            self._fields = []
            self._head_size = 0
            return
        self._status = status
        if self._no_body:  # the response to HEAD: no body whatever its fields say
            self._complete = True
            self.reusable = False
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._status == 0:  # an interim response with a body: not HTTP/1.1
            raise Unavailable("an interim response with a body")
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._status == 0:
            return  # the end of an interim response
        if not self.parser.should_keep_alive():
            self.reusable = False
        self._complete = True
        self._wake()

    # -- the request side ---------------------------------------------------------------
    def _until_close(self) -> bool:
        names = {n for n, _ in self._fields}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: UpstreamError) -> None:
        self.reusable = False
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a failure while the body is sent is raised there
        self._wake()
        self.close(abort=True)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def start(self, method: str) -> None:
        self._no_body = method == "HEAD"
        self._active = True
        self._complete = False
        self._status = 0
        self._head_size = 0
        self._fields = []
        self._chunks.clear()
        self._buffered = 0
        self._error = None
        self._head = asyncio.get_running_loop().create_future()

    async def write(self, data: bytes, seconds: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise self._error or Unavailable("the upstream closed the connection")
        transport.write(data)
        if self._drain is not None and not self._drain.done():
            if not await _within(self._drain, seconds):
                self._fail(UpstreamTimeout("writing to the upstream timed out"))
                raise UpstreamTimeout("writing to the upstream timed out")

    async def response_head(self, seconds: float) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        if not self._head.done() and not await _within(self._head, seconds):
            self._fail(UpstreamTimeout("the upstream's response head timed out"))
            raise UpstreamTimeout("the upstream's response head timed out")
        self._head.result()  # raises the failure that ended the wait
        return self._status, self._fields

    async def read_body(self, seconds: float) -> bytes | None:
        """The next piece of the body, or None at its end; ``Broken`` on any failure."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= HIGH_WATER // 2:
                    self._resume()
                return chunk
            if self._error is not None:
                raise Broken(str(self._error))
            if self._complete:
                return None
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                if not await _within(self._wakeup, seconds):
                    self._fail(UpstreamTimeout("the upstream's body stalled"))
                    raise Broken("the upstream's body stalled")
            finally:
                self._wakeup = None

    def whole(self) -> bool:
        return self._complete and self._error is None

    def take(self) -> deque[bytes]:
        chunks, self._chunks, self._buffered = self._chunks, deque(), 0
        if self._paused:
            self._resume()
        return chunks

    def _resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def done(self) -> None:
        """The request's turn on this connection is over."""
        self._active = False

    def finished(self) -> bool:
        """Whether the response was read to its end and the connection can serve another."""
        return (self._complete and self._error is None and self.reusable
                and self.transport is not None and not self.transport.is_closing())

    def close(self, *, abort: bool = False) -> None:
        self.reusable = False
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


async def _within(future: asyncio.Future[None], seconds: float) -> bool:
    """Wait for ``future`` at most ``seconds``: whether it finished (its exception, if any,
    stays in it). A timer and a callback, no task (cheaper than ``asyncio.wait_for``)."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()

    def settle(outcome: bool) -> None:
        if not waiter.done():
            waiter.set_result(outcome)

    future.add_done_callback(lambda _: settle(True))
    timer = loop.call_later(seconds, settle, False)
    try:
        return await waiter
    finally:
        timer.cancel()


class UpstreamPool:
    """Keep-alive connections to the upstreams: at most ``max_connections`` in use at once
    (more requests wait up to their connect timeout: 504), at most ``max_idle`` idle."""

    def __init__(self, *, max_connections: int = 512, max_idle: int = 128,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self.max_idle = max_idle
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # verified, hostname checked
        return self._ssl

    async def request(self, origin: Origin, method: str, target: str,
                      headers: list[tuple[bytes, bytes]], body: AsyncIterator[bytes] | None,
                      *, content_length: int | None, connect_timeout: float,
                      read_timeout: float) -> Response:
        """Send one request and wait for its response head. ``headers`` carry no framing
        field: with a ``body`` and no ``content_length`` the body goes chunked (RFC 9112
        §7.1), ``content_length=0`` without a body is sent as such. Errors raised by the
        ``body`` iterator propagate after the connection is closed."""
        raw_target = target.encode("latin-1")
        if not raw_target.isascii():  # RFC 3986 §2.1: octets outside ASCII percent-encoded
            raw_target = quote_from_bytes(raw_target, safe=_VISIBLE).encode("ascii")
        if not raw_target.startswith(b"/") or any(b in _FORBIDDEN_TARGET for b in raw_target):
            raise Unavailable("the request target cannot be sent")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        if self._slots.locked():  # all in use: wait for one, as long as for a connect
            try:
                await asyncio.wait_for(self._slots.acquire(), connect_timeout)
            except TimeoutError:
                raise UpstreamTimeout("no upstream connection became free") from None
        else:
            await self._slots.acquire()
        try:
            head = [method.encode("ascii"), b" ", raw_target, b" HTTP/1.1\r\nhost: ",
                    origin.authority, b"\r\n"]
            for name, value in headers:
                head += (name, b": ", value, b"\r\n")
            if body is not None or content_length == 0:  # RFC 9112 §6.2, §6.3
                head.append(b"transfer-encoding: chunked\r\n" if content_length is None
                            else b"content-length: %d\r\n" % content_length)
            head.append(b"\r\n")
            data = b"".join(head)
            for attempt in (0, 1):
                conn, reused = await self._connection(origin, connect_timeout)
                conn.start(method)
                try:
                    await conn.write(data, read_timeout)
                    if body is not None:
                        await self._send_body(conn, body, content_length is None,
                                              read_timeout)
                    status, fields = await conn.response_head(read_timeout)
                except Unavailable:
                    conn.close()
                    # a kept-alive connection the upstream closed as we reused it: once more
                    if reused and body is None and attempt == 0:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                return Response(conn, self, status, fields, read_timeout)
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self._slots.release()
            raise

    async def _send_body(self, conn: _Connection, body: AsyncIterator[bytes], chunked: bool,
                         seconds: float) -> None:
        async for chunk in body:
            if not chunk:
                continue
            if chunked:  # RFC 9112 §7.1: size in hex, CRLF, data, CRLF
                await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk), seconds)
            else:
                await conn.write(chunk, seconds)
        if chunked:
            await conn.write(b"0\r\n\r\n", seconds)

    async def _connection(self, origin: Origin, connect_timeout: float
                          ) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.reusable and now - conn.idle_since < IDLE_TTL and \
                    conn.transport is not None and not conn.transport.is_closing():
                return conn, True
            conn.close()
        if self._idle_count and self._idle_count + 1 > self.max_idle:
            self._evict()
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(origin), origin.host, origin.port,
                ssl=self._tls() if origin.scheme == "https" else None,
                server_hostname=origin.host if origin.scheme == "https" else None),
                connect_timeout)
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise Unavailable(f"connecting to the upstream failed: {type(exc).__name__}"
                              ) from None
        return conn, False

    def _evict(self) -> None:
        """Close the oldest idle connection of any origin."""
        oldest: list[_Connection] | None = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest[0].idle_since):
                oldest = conns
        if oldest:
            oldest.pop(0).close()
            self._idle_count -= 1

    def release(self, conn: _Connection) -> None:
        """Give a connection back: kept if its response ended cleanly, closed otherwise."""
        if self._slots is not None:
            self._slots.release()
        conn.done()
        if self._closed or not conn.finished():
            conn.close()
            return
        if self._idle_count >= self.max_idle:
            self._evict()
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._idle_count += 1

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
