"""Layer-7 flood on loopback against a real ``bastion serve --dev``: a well-behaved client's
success rate and latency, unloaded and while slowloris and slow-body (R.U.D.Y.) clients
hold connections open (each reconnects as soon as the server cuts it off).

    .venv/bin/python bench/flood.py [--slowloris 200] [--rudy 50] [--requests 2000]

The attackers connect from 127.0.0.2-127.0.0.9 (any 127/8 address is loopback on Linux),
spread so the per-IP connection cap does not simply refuse them: what is measured is the
header and body deadlines. The well-behaved client connects from 127.0.0.1 over one
kept-alive connection and fetches the discovery document (through the whole edge chain).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BASTION = str(Path(sys.executable).parent / "bastion")
PATH = "/.well-known/openid-configuration"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Attack:
    """``n`` slow clients; each sends ``head`` then one ``drip`` every ``interval`` s."""

    def __init__(self, port: int, n: int, head: bytes, drip: bytes, interval: float) -> None:
        self.port, self.n, self.head, self.drip, self.interval = port, n, head, drip, interval
        self.cut = 0  # connections the server ended
        self.open = 0
        self.stop = asyncio.Event()

    async def one(self, i: int) -> None:
        source = f"127.0.0.{2 + i % 8}"
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.5)
                continue
            self.open += 1
            try:
                writer.write(self.head)
                while not self.stop.is_set():
                    await asyncio.sleep(self.interval)
                    if reader.at_eof():
                        break
                    writer.write(self.drip)
                    await writer.drain()
                    try:
                        data = await asyncio.wait_for(reader.read(4096), 0.01)
                        if not data or data.startswith(b"HTTP/"):
                            break
                    except TimeoutError:
                        pass
                self.cut += not self.stop.is_set()
            except OSError:
                self.cut += 1
            finally:
                self.open -= 1
                writer.close()

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.one(i)) for i in range(self.n)]


async def measure(port: int, n: int, pace: float) -> tuple[float, float, float]:
    """(success rate, p50 ms, p99 ms) of ``n`` sequential requests, ``pace`` s apart."""
    ok, times = 0, []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for _ in range(n):
            start = time.perf_counter()
            try:
                r = await c.get(PATH)
                ok += r.status_code == 200
            except httpx.HTTPError:
                pass
            times.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(pace)
    q = statistics.quantiles(times, n=100)
    return ok / n, statistics.median(times), q[98]


async def attack(port: int, slowloris: int, rudy: int, hold: float) -> tuple[int, int, int]:
    """Run the slow clients for ``hold`` seconds: (open connections after 3 s, slowloris
    connections cut by the server, slow-body connections cut)."""
    loris = Attack(port, slowloris, b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n", 2.0)
    body = Attack(port, rudy, b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\n",
                  b"a", 2.0)
    tasks = loris.start() + body.start()
    await asyncio.sleep(3)
    held = loris.open + body.open
    await asyncio.sleep(max(0.0, hold - 3))
    loris.stop.set()
    body.stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return held, loris.cut, body.cut


def attacker(port: int, slowloris: int, rudy: int, hold: float,
             out: multiprocessing.Queue[tuple[int, int, int]]) -> None:
    out.put(asyncio.run(attack(port, slowloris, rudy, hold)))


def run(args: argparse.Namespace, port: int) -> None:
    base = asyncio.run(measure(port, args.requests, args.pace))
    print(f"unloaded:    success {base[0]:.2%}  p50 {base[1]:.2f} ms  p99 {base[2]:.2f} ms")
    results: multiprocessing.Queue[tuple[int, int, int]] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=attacker, args=(port, args.slowloris, args.rudy,
                                                          args.hold, results))
    proc.start()  # the attackers get a process of their own
    time.sleep(3)
    loaded = asyncio.run(measure(port, args.requests, args.pace))
    held, loris_cut, body_cut = results.get(timeout=args.hold + 60)
    proc.join(10)
    print(f"under flood: success {loaded[0]:.2%}  p50 {loaded[1]:.2f} ms  p99 "
          f"{loaded[2]:.2f} ms  (p99 {loaded[2] / base[2]:.2f}x unloaded)")
    print(f"attack: {args.slowloris} slowloris + {args.rudy} slow-body clients, {held} "
          f"connections open 3 s in; the server cut {loris_cut} slowloris and {body_cut} "
          f"slow-body connections in {args.hold:.0f} s (each client reconnects at once)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowloris", type=int, default=200)
    parser.add_argument("--rudy", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--pace", type=float, default=0.01,
                        help="seconds between the well-behaved client's requests")
    parser.add_argument("--hold", type=float, default=30.0,
                        help="seconds the attack lasts at least (deadlines: 10 s, 20 s)")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env["BASTION_ADMIN_PASSWORD"] = "correct horse battery staple"
        server = subprocess.Popen([BASTION, "serve", "--dev", "--port", str(port),
                                   "--data-dir", f"{tmp}/data", "--log-level", "warning"],
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("bastion serve did not start")
                time.sleep(0.2)
            run(args, port)
        finally:
            server.terminate()
            server.wait(15)


if __name__ == "__main__":
    main()
