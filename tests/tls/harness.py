"""A real uvicorn with Bastion's guarded protocol behind ``TlsServing``, in a thread with
its own event loop (or as a task on the test's loop), and TLS clients that report what
they saw: status, the server certificate's serial, the ASGI TLS extension."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509

from bastion.config import Settings, load_settings
from bastion.edge.server import server_options
from bastion.edge.tls import TlsServing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(tmp: Path, **over: Any) -> Settings:
    return load_settings(data_dir=tmp / "data", **over)


@dataclass
class Echo:
    """An ASGI app answering every request with its scope's TLS extension (JSON)."""

    requests: int = 0
    seen: list[dict[str, Any] | None] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.requests += 1
        tls = scope.get("extensions", {}).get("tls")
        self.seen.append(tls)
        body = json.dumps({"tls": tls}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _config(serving: TlsServing, s: Settings, port: int) -> uvicorn.Config:
    return uvicorn.Config(serving, host="127.0.0.1", port=port, lifespan="on",
                          log_level="warning", ssl_context_factory=serving.context_factory,
                          **server_options(s))


@contextmanager
def serve_thread(s: Settings, app: Any = None) -> Iterator[tuple[int, TlsServing]]:
    """``TlsServing(app)`` under uvicorn in a thread; yields (port, serving)."""
    serving = TlsServing(app or Echo(), s)
    serving.prepare()
    port = free_port()
    server = uvicorn.Server(_config(serving, s, port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port, serving
    finally:
        server.should_exit = True
        thread.join(10)


@asynccontextmanager
async def serve_task(serving: TlsServing, s: Settings) -> AsyncIterator[int]:
    """``serving`` under uvicorn as a task on the running loop; yields the port."""
    port = free_port()
    server = uvicorn.Server(_config(serving, s, port))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn did not start")
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task


def client_context(ca: Path | None = None, *, cert: Path | None = None,
                   key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    serial: str  # of the certificate the server sent
    version: str | None
    cipher: str | None
    alpn: str | None


def _read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a response")
        rest += chunk
    status = int(head.split(b" ", 2)[1])
    try:
        body = json.loads(rest[:length]) if length else {}
    except ValueError:
        body = {"text": rest[:length].decode(errors="replace")}
    return status, body


def get(sock: ssl.SSLSocket, path: str = "/") -> tuple[int, dict[str, Any]]:
    """One keep-alive request on an open connection."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return _read_response(sock)


def connect(port: int, ctx: ssl.SSLContext, *, timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def serial_of(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def request(port: int, ctx: ssl.SSLContext, path: str = "/") -> Answer:
    """A new connection, one request. Handshake refusals raise (``ssl.SSLError``,
    ``ConnectionError``): with TLS 1.3 the client learns of a refused certificate on its
    first read."""
    with connect(port, ctx) as sock:
        status, body = get(sock, path)
        cipher = sock.cipher()
        return Answer(status, body, serial_of(sock), sock.version(),
                      cipher[0] if cipher else None, sock.selected_alpn_protocol())
