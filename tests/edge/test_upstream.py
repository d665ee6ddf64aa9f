"""The proxy's upstream client (``edge/upstream.py``) against scripted upstreams on real
loopback sockets: keep-alive reuse, strict framing (RFC 9112 §6.3, §11.2), caps on the
response head, timeouts and failures mapped to 502/504/broken."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bastion.edge.upstream import (
    HIGH_WATER,
    MAX_FIELDS,
    MAX_HEAD,
    Broken,
    Origin,
    Unavailable,
    UpstreamPool,
    UpstreamTimeout,
)
from tests.live import free_port

pytestmark = pytest.mark.anyio

RESET = b"<reset>"
Script = Callable[[int, bytes], Awaitable[bytes | None]]  # (request no., head+body) -> reply


class Scripted:
    """A raw HTTP/1.1 server answering each request with the bytes its script returns
    (None: close without answering); counts connections and keeps what it received."""

    def __init__(self, script: Script, *, close_after: bool = False) -> None:
        self.script = script
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers)
        await self.server.wait_closed()

    @property
    def origin(self) -> Origin:
        return Origin.parse(f"http://127.0.0.1:{self.port}/base")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            await self._answer(reader, writer)
        except asyncio.CancelledError:  # the test is over (a clean end for asyncio's streams)
            pass
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            body = b""
            lower = head.lower()
            if b"content-length: " in lower:
                size = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(size)
            elif b"transfer-encoding: chunked" in lower:
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    body += (await reader.readexactly(size + 2))[:-2]
                    if size == 0:
                        break
            self.requests.append(head + body)
            reply = await self.script(len(self.requests), head + body)
            if reply is None:
                return
            if reply.endswith(RESET):  # what came before, then a TCP reset (RFC 9293 §3.5.2)
                writer.write(reply[:-len(RESET)])
                await writer.drain()
                await asyncio.sleep(0.05)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(reply)
            await writer.drain()
            if self.close_after:
                return


def fixed(reply: bytes) -> Script:
    async def script(n: int, request: bytes) -> bytes:
        return reply
    return script


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def fetch(pool: UpstreamPool, origin: Origin, method: str = "GET",
                body: AsyncIterator[bytes] | None = None, content_length: int | None = None,
                read_timeout: float = 5) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    response = await pool.request(origin, method, "/base/x?y=1", [(b"x-test", b"1")], body,
                                  content_length=content_length, connect_timeout=2,
                                  read_timeout=read_timeout)
    try:
        data = b"".join([chunk async for chunk in response.body()])
    finally:
        await response.aclose()
    return response.status, response.headers, data


async def test_requests_reuse_one_kept_alive_connection() -> None:
    pool = UpstreamPool()
    async with Scripted(fixed(OK)) as up:
        for _ in range(20):
            assert (await fetch(pool, up.origin))[::2] == (200, b"ok")
        assert up.connections == 1
        first = up.requests[0]
        assert first.startswith(b"GET /base/x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"x-test: 1\r\n" in first
    await pool.aclose()


async def test_concurrent_requests_are_bounded_by_max_connections() -> None:
    pool = UpstreamPool(max_connections=4, max_idle=4)

    async def slow(n: int, request: bytes) -> bytes:
        await asyncio.sleep(0.05)
        return OK

    async with Scripted(slow) as up:
        results = await asyncio.gather(*(fetch(pool, up.origin) for _ in range(32)))
        assert all(r[0] == 200 and r[2] == b"ok" for r in results)
        assert up.connections <= 4
    await pool.aclose()


async def test_request_bodies_are_framed_by_length_or_chunked() -> None:
    pool = UpstreamPool()

    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    async with Scripted(fixed(OK)) as up:
        await fetch(pool, up.origin, "POST", parts(), content_length=11)
        await fetch(pool, up.origin, "POST", parts(), content_length=None)
        await fetch(pool, up.origin, "POST", None, content_length=0)
        sized, chunked, empty = up.requests
        assert b"content-length: 11\r\n" in sized and sized.endswith(b"\r\n\r\nhello world")
        assert b"transfer-encoding: chunked\r\n" in chunked
        assert chunked.endswith(b"hello world") and b"content-length" not in chunked
        assert b"content-length: 0\r\n" in empty
    await pool.aclose()


async def test_chunked_and_until_close_responses_are_read_whole() -> None:
    pool = UpstreamPool()
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    async with Scripted(fixed(chunked)) as up:
        assert (await fetch(pool, up.origin))[2] == b"abcde"
        assert (await fetch(pool, up.origin))[2] == b"abcde"
        assert up.connections == 1
    until_close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    async with Scripted(fixed(until_close), close_after=True) as up:
        assert (await fetch(pool, up.origin))[2] == b"all of it"
        assert (await fetch(pool, up.origin))[2] == b"all of it"
        assert up.connections == 2  # never reused
    await pool.aclose()


async def test_interim_responses_are_skipped() -> None:
    pool = UpstreamPool()
    reply = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + OK
    async with Scripted(fixed(reply)) as up:
        status, headers, body = await fetch(pool, up.origin)
        assert (status, body) == (200, b"ok")
        assert (b"link", b"</a.css>") not in headers
    await pool.aclose()


async def test_head_responses_have_no_body_and_close_the_connection() -> None:
    pool = UpstreamPool()
    async with Scripted(fixed(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n")) as up:
        status, headers, body = await fetch(pool, up.origin, "HEAD", read_timeout=2)
        assert (status, body) == (200, b"") and (b"content-length", b"500") in headers
        await fetch(pool, up.origin, "HEAD", read_timeout=2)
        assert up.connections == 2
    await pool.aclose()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
    b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nx bad: a\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\nx-bare-lf: 1\ncontent-length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\n folded: start\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/9.9 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEAD + 1) + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"x-f: 1\r\n" * (MAX_FIELDS + 1) + b"content-length: 0\r\n\r\n",
], ids=["cl-then-te", "te-then-cl", "two-lengths", "negative-length", "hex-length",
        "nul-in-value", "space-in-name", "bare-lf", "obs-fold", "bad-version",
        "bad-status", "switching-protocols", "garbage", "huge-field", "too-many-fields"])
async def test_bad_framing_before_the_head_is_unavailable(reply: bytes) -> None:
    """RFC 9112 §6.3 and §11.2: whatever could frame a response two ways is refused."""
    pool = UpstreamPool()
    async with Scripted(fixed(reply)) as up:
        with pytest.raises(Unavailable):
            await fetch(pool, up.origin, read_timeout=2)
    await pool.aclose()


async def test_a_head_that_never_ends_is_cut_at_the_cap() -> None:
    pool = UpstreamPool()

    async def endless(n: int, request: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * (4 * MAX_HEAD)  # no end of line

    async with Scripted(endless) as up:
        with pytest.raises(Unavailable):
            await fetch(pool, up.origin, read_timeout=2)
    await pool.aclose()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
], ids=["bad-chunk-size", "short-body"])
async def test_bad_framing_after_the_head_breaks_the_body(reply: bytes) -> None:
    pool = UpstreamPool()
    async with Scripted(fixed(reply), close_after=True) as up:
        response = await pool.request(up.origin, "GET", "/", [], None, content_length=None,
                                      connect_timeout=2, read_timeout=2)
        assert response.status == 200
        with pytest.raises(Broken):
            async for _ in response.body():
                pass
        await response.aclose()
    await pool.aclose()


async def test_bytes_after_a_response_are_never_read_as_the_next_one() -> None:
    """A smuggled second response on the connection: the connection is dropped, the next
    request gets its own answer on a new one."""
    pool = UpstreamPool()

    async def smuggler(n: int, request: bytes) -> bytes:
        if n == 1:
            return OK + b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"
        return b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhonest"

    async with Scripted(smuggler) as up:
        assert (await fetch(pool, up.origin))[2] == b"ok"
        await asyncio.sleep(0.05)
        assert (await fetch(pool, up.origin))[2] == b"honest"
        assert up.connections == 2
    await pool.aclose()


async def test_an_idle_connection_closed_by_the_upstream_is_replaced() -> None:
    pool = UpstreamPool()
    async with Scripted(fixed(OK), close_after=True) as up:  # keeps nothing alive, says not
        for _ in range(3):
            assert (await fetch(pool, up.origin))[2] == b"ok"
        assert up.connections == 3
    await pool.aclose()


async def test_large_bodies_are_read_with_backpressure() -> None:
    """The client reads at most HIGH_WATER ahead of its consumer (the socket is paused)."""
    pool = UpstreamPool()
    size = 32 * HIGH_WATER
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size
    async with Scripted(fixed(reply)) as up:
        response = await pool.request(up.origin, "GET", "/", [], None, content_length=None,
                                      connect_timeout=2, read_timeout=5)
        await asyncio.sleep(0.2)  # the upstream writes as fast as it can meanwhile
        conn = response._conn
        assert conn._buffered <= HIGH_WATER + 512 * 1024  # one read past the mark at most
        total = 0
        async for chunk in response.body():
            total += len(chunk)
        assert total == size
        await response.aclose()
        assert (await fetch(pool, up.origin))[2] == b"x" * size
        assert up.connections == 1
    await pool.aclose()


async def test_a_silent_upstream_is_a_timeout_and_a_dead_one_unavailable() -> None:
    pool = UpstreamPool()

    async def silent(n: int, request: bytes) -> bytes:
        await asyncio.sleep(10)
        return OK

    async with Scripted(silent) as up:
        with pytest.raises(UpstreamTimeout):
            await fetch(pool, up.origin, read_timeout=0.3)
    with pytest.raises(Unavailable):
        await fetch(pool, Origin.parse(f"http://127.0.0.1:{free_port()}"))

    async def stalls(n: int, request: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf"  # then nothing

    async with Scripted(stalls) as up:
        with pytest.raises(Broken):
            await fetch(pool, up.origin, read_timeout=0.3)
    await pool.aclose()


async def test_waiting_for_a_free_connection_times_out() -> None:
    pool = UpstreamPool(max_connections=1, max_idle=1)

    async def slow(n: int, request: bytes) -> bytes:
        await asyncio.sleep(1)
        return OK

    async with Scripted(slow) as up:
        first = asyncio.ensure_future(fetch(pool, up.origin))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamTimeout):
            await pool.request(up.origin, "GET", "/", [], None, content_length=None,
                               connect_timeout=0.2, read_timeout=5)
        assert (await first)[2] == b"ok"
    await pool.aclose()


@pytest.mark.parametrize("target", ["/a b", "/a\r\nx-injected: 1", "/\x7f", "relative",
                                    "/a\tb"])
async def test_targets_that_would_break_the_request_line_are_refused(target: str) -> None:
    pool = UpstreamPool()
    async with Scripted(fixed(OK)) as up:
        with pytest.raises(Unavailable):
            await pool.request(up.origin, "GET", target, [], None, content_length=None,
                               connect_timeout=2, read_timeout=2)
        assert up.requests == []
    await pool.aclose()


async def test_octets_outside_ascii_in_a_target_are_percent_encoded() -> None:
    pool = UpstreamPool()
    async with Scripted(fixed(OK)) as up:
        response = await pool.request(up.origin, "GET", "/caf\xe9?q=%41\xff", [], None,
                                      content_length=None, connect_timeout=2, read_timeout=2)
        await response.aclose()
        assert up.requests[0].startswith(b"GET /caf%E9?q=%41%FF HTTP/1.1\r\n")
    await pool.aclose()


async def test_a_reset_in_a_body_read_to_the_close_breaks_it() -> None:
    """A body framed by the connection's end (RFC 9112 §6.3 (8)) ends only with a clean
    close: a reset is a failure, not the end."""
    pool = UpstreamPool()

    async def script(n: int, request: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\n\r\npartial" + RESET

    async with Scripted(script) as up:
        response = await pool.request(up.origin, "GET", "/", [], None, content_length=None,
                                      connect_timeout=2, read_timeout=2)
        assert response.status == 200
        with pytest.raises(Broken):
            async for _ in response.body():
                pass
        await response.aclose()
    await pool.aclose()


@pytest.mark.parametrize("url,authority", [
    ("http://Example.COM/v1", b"example.com"),
    ("http://127.0.0.1:8080", b"127.0.0.1:8080"),
    ("https://h:443/", b"h"),
    ("http://[::1]:81/x", b"[::1]:81"),
])
def test_origin_host_field(url: str, authority: bytes) -> None:
    assert Origin.parse(url).authority == authority
