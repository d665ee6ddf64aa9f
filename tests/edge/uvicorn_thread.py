"""A real uvicorn with Bastion's guarded protocol, in a thread with its own event loop, on a
free loopback port; a plain uvicorn as a task on the test's own loop (``served``); and
raw-socket helpers for clients that misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn

from bastion.edge.server import ServerLimits, protocol_class


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with a plain uvicorn on the running loop; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="critical", proxy_headers=False))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextmanager
def serve(app: Any, limits: ServerLimits, **protocol: Any) -> Iterator[int]:
    """Serve ``app`` with ``limits``; yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning", ws="none", proxy_headers=False,
                            http=protocol_class(limits, **protocol))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))
    return sock


def read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything until the peer closes (or resets) the connection, at most ``limit``."""
    out = b""
    try:
        while len(out) < limit:
            data = sock.recv(65536)
            if not data:
                break
            out += data
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def exchange(port: int, data: bytes, *, source: str = "127.0.0.1",
             timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``data``, read until the server closes; (the answer, seconds it took)."""
    start = time.monotonic()
    with connect(port, source, timeout) as sock:
        sock.sendall(data)
        answer = read_all(sock)
    return answer, time.monotonic() - start


def status(answer: bytes) -> int:
    """The status code of the first response in ``answer`` (0: none)."""
    if not answer.startswith(b"HTTP/1.1 "):
        return 0
    return int(answer[9:12])
