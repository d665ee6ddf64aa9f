"""The server layer over real sockets: uvicorn with Bastion's guarded protocol against a real
slowloris client, a real slow-body (R.U.D.Y.) client and a kept-alive idler while a normal
client keeps being served; header, URL and body caps; request smuggling shapes; broken
chunked encoding and malformed HTTP; the per-IP connection cap; counters and aggregated
audit records. Small deadlines keep it fast; timing is asserted with generous bounds only."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bastion.config import Settings
from bastion.edge.clientip import TrustedProxies
from bastion.edge.counters import EdgeCounters
from bastion.edge.server import ServerLimits, server_options
from tests.edge.uvicorn_thread import connect, exchange, read_all, serve, status
from tests.live import LiveServer, start_live_server

LIMITS = ServerLimits(header_timeout=1.0, body_timeout=1.0, body_min_rate=100,
                      keepalive_timeout=1.0, max_header_count=20, max_header_bytes=2048,
                      max_url_bytes=512, max_request_body_bytes=4096,
                      max_connections_per_ip=200, max_connections=1000)
SLOW = "127.0.0.2"  # the attacker's source address (any 127/8 address is loopback)
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


async def home(request: Request) -> Response:
    try:
        body = await request.body()
    except ClientDisconnect:
        return Response(status_code=499)
    return PlainTextResponse(f"ok {len(body)}")


APP = Starlette(routes=[Route("/", home, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def counters() -> EdgeCounters:
    return EdgeCounters(window=0.2)


@pytest.fixture(scope="module")
def port(counters: EdgeCounters) -> Iterator[int]:
    with serve(APP, LIMITS, counters=counters) as p:
        yield p


class Dripper(threading.Thread):
    """``n`` connections from ``source`` that each send ``prefix`` and then one byte of
    ``drip`` every ``interval`` seconds, until the server answers or closes. Records, per
    connection, the first bytes of the answer and when the connection ended."""

    def __init__(self, port: int, n: int, prefix: bytes, drip: bytes, *,
                 interval: float = 0.2, source: str = SLOW, give_up: float = 15.0,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(daemon=True)
        self.socks = [connect(port, source) for _ in range(n)]
        if tls is not None:
            self.socks = [tls.wrap_socket(s, server_hostname="localhost") for s in self.socks]
        self.prefix, self.drip, self.interval, self.give_up = prefix, drip, interval, give_up
        self.answers: dict[int, bytes] = {}
        self.ended: dict[int, float] = {}
        self.start_time = time.monotonic()

    def run(self) -> None:
        for s in self.socks:
            s.sendall(self.prefix)
            s.setblocking(False)
        step = 0
        while len(self.ended) < len(self.socks) and \
                time.monotonic() - self.start_time < self.give_up:
            for i, s in enumerate(self.socks):
                if i in self.ended:
                    continue
                try:
                    data = s.recv(4096)
                    self.answers[i] = self.answers.get(i, b"") + data
                    if not data:
                        self.ended[i] = time.monotonic() - self.start_time
                        continue
                except WOULD_BLOCK:
                    pass
                except OSError:
                    self.ended[i] = time.monotonic() - self.start_time
                    continue
                try:
                    s.send(self.drip[step % len(self.drip):][:1] or b"a")
                except WOULD_BLOCK:
                    pass
                except OSError:
                    self.ended[i] = time.monotonic() - self.start_time
            step += 1
            time.sleep(self.interval)
        for s in self.socks:
            s.close()


def normal_client(port: int, n: int) -> list[int]:
    codes = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        for _ in range(n):
            codes.append(c.get("/").status_code)
            time.sleep(0.05)
    return codes


# --- slow clients -------------------------------------------------------------------------

def test_slowloris_is_cut_off_while_a_normal_client_is_served(port: int) -> None:
    attack = Dripper(port, 40, b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n")
    attack.start()
    codes = normal_client(port, 20)
    attack.join(20)
    assert codes == [200] * 20
    assert len(attack.ended) == 40  # every slow connection was closed by the server
    assert max(attack.ended.values()) < LIMITS.header_timeout + 5
    assert all(status(a) == 408 for a in attack.answers.values())


def test_rudy_slow_body_is_cut_off_while_a_normal_client_is_served(port: int) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"
    attack = Dripper(port, 20, head, b"a")
    attack.start()
    codes = normal_client(port, 20)
    attack.join(20)
    assert codes == [200] * 20
    assert len(attack.ended) == 20
    assert max(attack.ended.values()) < LIMITS.body_timeout + 5
    assert all(status(a) == 408 for a in attack.answers.values())


def test_a_slow_but_steady_upload_above_the_minimum_rate_is_served(port: int) -> None:
    with connect(port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n"
                  b"Connection: close\r\n\r\n")
        for _ in range(10):  # 1000 B/s over 2 s: slower than the deadline, above the rate
            s.sendall(b"a" * 200)
            time.sleep(0.2)
        answer = read_all(s)
    assert status(answer) == 200 and answer.endswith(b"ok 2000")


def test_a_stalled_body_gets_408(port: int) -> None:
    answer, took = exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    assert status(answer) == 408 and took < LIMITS.body_timeout + 5


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    answer, took = exchange(port, b"")
    assert answer == b"" and took < LIMITS.header_timeout + 5


def test_an_idle_kept_alive_connection_is_closed_and_crlf_does_not_keep_it(port: int) -> None:
    with connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        s.settimeout(0.3)
        answer, closed = b"", False
        while time.monotonic() - start < 10 and not closed:
            try:
                s.sendall(b"\r\n")
                data = s.recv(4096)
                closed = not data
                answer += data
            except TimeoutError:
                continue
            except OSError:
                closed = True
        took = time.monotonic() - start
    assert status(answer) == 200 and closed and took < LIMITS.keepalive_timeout + 5


def test_keep_alive_serves_several_requests(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        assert [c.post("/", content=b"x" * n).text for n in (1, 10, 4096)] == \
            ["ok 1", "ok 10", "ok 4096"]


# --- caps and bad input -------------------------------------------------------------------

HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n"
CASES: list[tuple[str, bytes, int]] = [
    ("too-many-headers", HEAD + b"".join(b"X-%d: y\r\n" % i for i in range(25)) + b"\r\n", 431),
    ("header-section-too-large", HEAD + b"X-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
    ("url-too-long", b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("declared-body-too-large", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
     413),
    ("expect-continue-too-large", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n"
     b"Expect: 100-continue\r\n\r\n", 413),
    ("chunked-body-too-large", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n" + b"800\r\n" + b"a" * 0x800 + b"\r\n" + b"800\r\n" + b"a" * 0x800 + b"\r\n"
     + b"800\r\n" + b"a" * 0x800 + b"\r\n0\r\n\r\n", 413),
    ("cl-and-te", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("duplicate-differing-cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Content-Length: 4\r\n\r\nabcd", 400),
    ("duplicate-equal-cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Content-Length: 3\r\n\r\nabc", 400),
    ("cl-list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    ("te-not-chunked-last", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip"
     b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-obfuscated", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-not-hex", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-data-longer-than-size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
     b"chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", 400),
    ("header-without-colon", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("nul-in-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n", 400),
    ("bare-cr", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    ("bad-version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    ("upgrade-with-body", b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
     b"Upgrade: foo\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("smuggling-behind-an-upgrade", b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
     b"Upgrade: foo\r\nContent-Length: 34\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
     400),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400),
    ("tls-to-plain-port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ("binary-garbage", bytes(range(256)), 400),
]


@pytest.mark.parametrize(("request_bytes", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_requests_get_a_clear_4xx_and_a_close(port: int, request_bytes: bytes,
                                                  expected: int) -> None:
    answer, took = exchange(port, request_bytes)
    assert status(answer) == expected
    assert b"connection: close" in answer.lower()
    assert took < 5  # answered at once (the close follows the answer)


def test_an_upgrade_is_ignored_and_ends_the_connection(port: int) -> None:
    """RFC 9110 §7.8: no h2c or WebSocket here; the request is answered as HTTP/1.1 and
    nothing after its head is parsed as another request."""
    answer, took = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
                            b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAA\r\n"
                            b"\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(answer) == 200 and answer.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in answer and took < 5


def test_pipelined_requests_are_all_answered(port: int) -> None:
    answer, _ = exchange(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                         b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(b"ok 3") < answer.rindex(b"ok 0")


def test_a_header_streamed_forever_is_cut_off_in_bounded_memory(port: int) -> None:
    with connect(port) as s:
        s.sendall(HEAD + b"X-Endless: ")
        sent = 0
        try:
            while sent < 4 << 20:
                s.sendall(b"a" * 16384)
                sent += 16384
        except OSError:
            pass
        answer = read_all(s)
    assert status(answer) == 431


def test_counters_and_aggregated_audit_records() -> None:
    records: list[dict[str, Any]] = []

    class Sink:
        async def emit(self, event_name: str, **fields: Any) -> None:
            records.append({"eventName": event_name, **fields})

    counters = EdgeCounters(window=2.0)
    counters.attach_audit(Sink())
    with serve(APP, LIMITS, counters=counters) as port:
        for _ in range(3):
            exchange(port, b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert records == []  # nothing per connection
        deadline = time.monotonic() + 10
        while not records and time.monotonic() < deadline:
            time.sleep(0.05)
    assert counters.refusals[("server", "url_too_long")] == 3
    assert len(records) == 1  # one summary for the window
    record = records[0]
    assert record["eventName"] == "ConnectionRefused"
    assert record["error_code"] == "UrlTooLong"
    assert record["request_id"] is None and record["source_ip"] == "127.0.0.1"
    assert record["additional"]["refusals"] == 3
    assert record["additional"]["sources"] == {"127.0.0.1": 3}


# --- connection caps ----------------------------------------------------------------------

def test_per_ip_connection_cap() -> None:
    counters = EdgeCounters()
    limits = ServerLimits(header_timeout=10, max_connections_per_ip=3)
    with serve(APP, limits, counters=counters,
               trusted_proxies=TrustedProxies(["127.0.0.3"])) as port:
        held = [connect(port, SLOW) for _ in range(3)]
        time.sleep(0.2)
        answer, took = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", source=SLOW)
        assert status(answer) == 503 and b"retry-after: 1" in answer and took < 5
        # another address is not affected
        assert status(exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close"
                                     b"\r\n\r\n")[0]) == 200
        # a trusted proxy carries many clients: no per-IP cap
        proxy = [connect(port, "127.0.0.3") for _ in range(5)]
        for s in proxy:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert [status(read_all(s)) for s in proxy] == [200] * 5
        # a slot freed is a slot available again
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:
            answer, _ = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close"
                                       b"\r\n\r\n", source=SLOW)
            if status(answer) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status(answer) == 200
        for s in held + proxy:
            s.close()
    assert counters.refusals[("server", "ip_connection_cap")] >= 1
    assert counters.connections == 0


def test_total_connection_cap() -> None:
    counters = EdgeCounters()
    with serve(APP, ServerLimits(header_timeout=10, max_connections=2),
               counters=counters) as port:
        held = [connect(port, f"127.0.0.{i}") for i in (4, 5)]
        time.sleep(0.2)
        answer, _ = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.6")
        for s in held:
            s.close()
    assert status(answer) == 503
    assert counters.refusals[("server", "connection_cap")] == 1


# --- configuration ------------------------------------------------------------------------

def test_server_options_come_from_settings(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, header_timeout=3, keepalive_timeout=2.5,
                        max_url_bytes=1000, trusted_proxies=("10.0.0.0/8",))
    options = server_options(settings, counters=EdgeCounters())
    cls = options["http"]
    assert cls.limits.header_timeout == 3 and cls.limits.max_url_bytes == 1000
    assert cls.proxies is not None and cls.proxies.trusts("10.1.2.3")
    assert options["timeout_keep_alive"] == 3 and options["proxy_headers"] is False


@pytest.mark.parametrize("bad", [{"header_timeout": 0}, {"max_header_count": 0},
                                 {"body_min_rate": 0}, {"keepalive_timeout": 4000}])
def test_bad_limits_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServerLimits(**bad)



# --- under bastion serve ------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"BASTION_HEADER_TIMEOUT": "1", "BASTION_BODY_TIMEOUT": "1",
           "BASTION_BODY_MIN_RATE": "100"}
    yield from start_live_server(tmp_path_factory.mktemp("flood"), env_over=env)


def test_bastion_serve_cuts_slow_clients_while_serving_others(live: LiveServer) -> None:
    port = int(live.url.rsplit(":", 1)[1])
    tls = live.ssl_context()
    loris = Dripper(port, 20, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n", b"X-a: b\r\n",
                    tls=tls)
    rudy = Dripper(port, 10, b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                   b"application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n",
                   b"a", tls=tls)
    loris.start()
    rudy.start()
    codes = []
    with live.http() as c:
        for _ in range(20):
            codes.append(c.get("/.well-known/openid-configuration").status_code)
            time.sleep(0.05)
    loris.join(20)
    rudy.join(20)
    assert codes == [200] * 20
    assert len(loris.ended) == 20 and len(rudy.ended) == 10
    assert all(status(a) == 408 for a in [*loris.answers.values(), *rudy.answers.values()])
    assert max([*loris.ended.values(), *rudy.ended.values()]) < 10


def test_a_body_dripped_after_an_early_answer_gets_no_second_answer() -> None:
    async def early(request: Request) -> Response:
        return PlainTextResponse("early", status_code=401)  # never reads the body

    app = Starlette(routes=[Route("/", early, methods=["POST"])])
    with serve(app, LIMITS, counters=EdgeCounters()) as port:
        attack = Dripper(port, 1, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n",
                         b"a", source="127.0.0.1")
        attack.start()
        attack.join(20)
    answer = attack.answers[0]
    assert status(answer) == 401 and answer.count(b"HTTP/1.1 ") == 1
    assert attack.ended[0] < LIMITS.body_timeout + 5  # and the dripper was still cut off


def test_a_client_that_does_not_read_its_response_is_disconnected() -> None:
    from starlette.responses import StreamingResponse

    size = 256 << 20

    async def big(request: Request) -> Response:
        async def chunks() -> Any:
            for _ in range(size >> 16):
                yield b"a" * 65536
        return StreamingResponse(chunks())

    counters = EdgeCounters()
    app = Starlette(routes=[Route("/", big)])
    with serve(app, LIMITS, counters=counters) as port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(LIMITS.body_timeout + 2)  # not reading
            received = len(read_all(sock, limit=size))
    assert received < size  # cut off, not served to the end
    assert counters.refusals[("server", "response_not_read")] == 1
