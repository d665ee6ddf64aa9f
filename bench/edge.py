"""The edge in one run: limit accuracy across two ``bastion serve`` processes sharing Redis,
limiter decisions per second vs a plain Redis INCR+EXPIRE pair, the reverse proxy's
overhead vs a direct call and vs nginx in front of the same upstream, and a flood on
loopback (bench/flood.py's slowloris and slow-body clients) against a well-behaved client.

    apt-get install wrk nginx           # Debian packages; nginx runs from a temp prefix
    .venv/bin/python bench/edge.py [--duration 10] [--flood-hold 30] [--only proxy]

Needs Redis at ``--redis`` (default redis://127.0.0.1:6379/0); keys are namespaced with a
random prefix (rule names) and left to expire. Everything listens on free loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).parent))
import flood  # noqa: E402  (bench/flood.py: the slow clients and the well-behaved one)

from bastion.edge.ratelimit import RedisBackend  # noqa: E402

BASTION = str(Path(sys.executable).parent / "bastion")
BURST_PATH = "/jwks.json"  # phase A: a burst only (refills one an hour)
RATE_PATH = "/.well-known/oauth-authorization-server"  # phase B: a steady rate


def free_port() -> int:
    return flood.free_port()


def wait_up(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.2)


@contextmanager
def running(args: list[str], url: str, what: str, env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_up(url, proc, what)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()  # type: ignore[union-attr]


def bastion(tmp: Path, name: str, port: int, env_over: dict[str, str]
            ) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update({"BASTION_ADMIN_PASSWORD": "correct horse battery staple", **env_over})
    return [BASTION, "serve", "--dev", "--port", str(port), "--data-dir",
            str(tmp / name), "--log-level", "warning"], env


# --- wrk --------------------------------------------------------------------------------
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk_cmd(url: str, connections: int, duration: float) -> list[str]:
    return ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d",
            f"{duration:g}s", "--latency", url]


def parse_wrk(out: str) -> dict[str, float]:
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"requests": total, "non2xx": int(bad.group(1)) if bad else 0,
            "errors": sum(map(int, errors.groups())) if errors else 0,
            "seconds": float(re.search(r"requests in ([0-9.]+)s", out).group(1)),  # type: ignore[union-attr]
            "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": _ms(lat["50"]), "p99": _ms(lat["99"])}


def wrk(url: str, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(wrk_cmd(url, connections, duration), capture_output=True,
                         text=True, check=True).stdout
    return parse_wrk(out)


def wrk_together(urls: list[str], connections: int, duration: float
                 ) -> list[dict[str, float]]:
    """wrk against every url at once."""
    procs = [subprocess.Popen(wrk_cmd(u, connections, duration), stdout=subprocess.PIPE,
                              text=True) for u in urls]
    outs = [p.communicate()[0] for p in procs]
    return [parse_wrk(o) for o in outs]


# --- 1. limit accuracy and limiter throughput -------------------------------------------
def accuracy(tmp: Path, redis_url: str, duration: float, rate: int) -> list[str]:
    tag = secrets.token_hex(4)
    burst_a = 3000
    rules = [{"name": f"bench-a-{tag}", "paths": [BURST_PATH], "rate": 1, "period": 3600,
              "burst": burst_a},
             {"name": f"bench-b-{tag}", "paths": [RATE_PATH], "rate": rate, "period": 1,
              "burst": rate}]
    env = {"BASTION_REDIS_URL": redis_url, "BASTION_RATE_LIMIT_RULES": json.dumps(rules)}
    ports = [free_port(), free_port()]
    lines = []
    with running(*_args(tmp, "a", ports[0], env)), running(*_args(tmp, "b", ports[1], env)):
        res = wrk_together([f"http://127.0.0.1:{p}{BURST_PATH}" for p in ports], 16,
                           duration / 2)
        admitted = sum(r["requests"] - r["non2xx"] for r in res)
        sent = sum(r["requests"] for r in res)
        lines.append(f"| burst only ({burst_a} then 1/h), 2 processes | {sent} | {burst_a} | "
                     f"{admitted} | {100 * (admitted - burst_a) / burst_a:+.2f}% |")
        res = wrk_together([f"http://127.0.0.1:{p}{RATE_PATH}" for p in ports], 16, duration)
        admitted = sum(r["requests"] - r["non2xx"] for r in res)
        sent = sum(r["requests"] for r in res)
        # wrk's own clock: its -d; the wall time around both includes process start-up
        span = max(r["seconds"] for r in res)  # wrk's own measure of its run
        expected = rate + rate * span  # the burst, then the rate
        lines.append(f"| {rate}/s, burst {rate}, {span:.2f} s, 2 processes | {sent} | "
                     f"{expected:.0f} | {admitted} | "
                     f"{100 * (admitted - expected) / expected:+.2f}% |")
    return lines


def _args(tmp: Path, name: str, port: int, env: dict[str, str]
          ) -> tuple[list[str], str, str, dict[str, str]]:
    cmd, full_env = bastion(tmp, name, port, env)
    return cmd, f"http://127.0.0.1:{port}/healthz", f"bastion {name}", full_env


async def decisions(redis_url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(GCRA decisions/s through RedisBackend, INCR+EXPIRE pairs/s), same keys and
    concurrency, one round trip each (EVALSHA; a non-transactional pipeline)."""
    redis = Redis.from_url(redis_url)
    tag = secrets.token_hex(4)
    backend = RedisBackend(redis, prefix=f"bench:{tag}:gcra:")
    keys = [f"k{i}" for i in range(1000)]

    async def gcra(worker: int) -> None:
        for i in range(worker, n, concurrency):
            await backend.take(keys[i % 1000], 1000, 10)

    async def incr(worker: int) -> None:
        for i in range(worker, n, concurrency):
            pipe = redis.pipeline(transaction=False)
            pipe.incr(f"bench:{tag}:incr:{keys[i % 1000]}")
            pipe.expire(f"bench:{tag}:incr:{keys[i % 1000]}", 60)
            await pipe.execute()

    rates = []
    for fn in (gcra, incr):
        await fn(0)  # warm: the script is loaded, the connections open
        start = time.perf_counter()
        await asyncio.gather(*(fn(w) for w in range(concurrency)))
        rates.append(n / (time.perf_counter() - start))
    keys_left = [k async for k in redis.scan_iter(f"bench:{tag}:*", count=1000)]
    if keys_left:
        await redis.delete(*keys_left)
    await redis.aclose()
    return rates[0], rates[1]


# --- 2. the proxy vs direct vs nginx ---------------------------------------------------
NGINX_UPSTREAM = """worker_processes 1; daemon off; pid {p}/up.pid; error_log {p}/up.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path {p}/t1; proxy_temp_path {p}/t2;
  fastcgi_temp_path {p}/t3; uwsgi_temp_path {p}/t4; scgi_temp_path {p}/t5;
  server { listen 127.0.0.1:{port}; keepalive_requests 100000;
    location / { default_type application/json; return 200 '{"ok":true}\n'; } } }
"""
NGINX_PROXY = """worker_processes 1; daemon off; pid {p}/px.pid; error_log {p}/px.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path {p}/t1; proxy_temp_path {p}/t2;
  fastcgi_temp_path {p}/t3; uwsgi_temp_path {p}/t4; scgi_temp_path {p}/t5;
  upstream up { server 127.0.0.1:{up}; keepalive 64; }
  server { listen 127.0.0.1:{port}; keepalive_requests 100000;
    location / { proxy_pass http://up; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme; } } }
"""


def nginx(tmp: Path, name: str, conf: str) -> list[str]:
    prefix = tmp / f"nginx-{name}"
    prefix.mkdir(mode=0o755)
    path = prefix / "nginx.conf"
    path.write_text(conf.replace("{p}", str(prefix)))
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(prefix), "-c", str(path)]


def proxy(tmp: Path, duration: float) -> list[str]:
    up, px, bx = free_port(), free_port(), free_port()
    settings = tmp / "bastion.toml"
    settings.write_text(f'[[routes]]\nname = "bench"\npath_prefix = "/up"\n'
                        f'upstream = "http://127.0.0.1:{up}"\nstrip_prefix = true\n'
                        f'auth = "none"\n')
    cmd, env = bastion(tmp, "proxy", bx, {"BASTION_CONFIG": str(settings)})
    lines = []
    with running(nginx(tmp, "up", NGINX_UPSTREAM.replace("{port}", str(up))),
                 f"http://127.0.0.1:{up}/", "nginx upstream"), \
            running(nginx(tmp, "px", NGINX_PROXY.replace("{port}", str(px))
                          .replace("{up}", str(up))), f"http://127.0.0.1:{px}/", "nginx proxy"), \
            running(cmd, f"http://127.0.0.1:{bx}/healthz", "bastion proxy", env):
        r = httpx.get(f"http://127.0.0.1:{bx}/up/item")
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text
        targets = [("direct (nginx upstream)", f"http://127.0.0.1:{up}/item"),
                   ("nginx reverse proxy", f"http://127.0.0.1:{px}/item"),
                   ("Bastion reverse proxy", f"http://127.0.0.1:{bx}/up/item"),
                   # the same edge answering by itself: the floor of the Python process
                   ("Bastion's own discovery document (no upstream hop)",
                    f"http://127.0.0.1:{bx}{RATE_PATH}")]
        results: dict[str, dict[int, dict[str, float]]] = {}
        for c in (1, 32):
            for name, url in targets:
                wrk(url, c, 2)  # warm
                results.setdefault(name, {})[c] = wrk(url, c, duration)
    ref = results["nginx reverse proxy"]
    for name, by_c in results.items():
        one, many = by_c[1], by_c[32]
        lines.append(
            f"| {name} | {one['p50']:.3f} | {one['p99']:.3f} | {one['rps']:.0f} | "
            f"{many['p50']:.2f} | {many['p99']:.2f} | {many['rps']:.0f} | "
            f"{one['p50'] / ref[1]['p50']:.2f}x / {many['p50'] / ref[32]['p50']:.2f}x | "
            f"{int(one['non2xx'] + many['non2xx'] + one['errors'] + many['errors'])} |")
    return lines


# --- 3. flood ---------------------------------------------------------------------------
def flooding(tmp: Path, args: argparse.Namespace) -> list[str]:
    port = free_port()
    cmd, env = bastion(tmp, "flood", port, {})
    with running(cmd, f"http://127.0.0.1:{port}/healthz", "bastion flood", env):
        base = asyncio.run(flood.measure(port, args.flood_requests, 0.01))
        results: multiprocessing.Queue[tuple[int, int, int]] = multiprocessing.Queue()
        proc = multiprocessing.Process(target=flood.attacker, args=(
            port, args.slowloris, args.rudy, args.flood_hold, results))
        proc.start()
        time.sleep(3)
        loaded = asyncio.run(flood.measure(port, args.flood_requests, 0.01))
        held, loris_cut, body_cut = results.get(timeout=args.flood_hold + 60)
        proc.join(10)
    return [f"| unloaded | {base[0]:.2%} | {base[1]:.2f} | {base[2]:.2f} | |",
            f"| {args.slowloris} slowloris + {args.rudy} slow-body ({held} connections held; "
            f"{loris_cut} + {body_cut} cut) | {loaded[0]:.2%} | {loaded[1]:.2f} | "
            f"{loaded[2]:.2f} | {loaded[2] / base[2]:.2f}x |"]


SECTIONS = ("accuracy", "decisions", "proxy", "flood")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rate", type=int, default=300, help="phase B limit, requests/s")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--slowloris", type=int, default=200)
    parser.add_argument("--rudy", type=int, default=50)
    parser.add_argument("--flood-requests", type=int, default=1500)
    parser.add_argument("--flood-hold", type=float, default=30.0)
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable); default: all")
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)  # nginx's workers may run as nobody
        if "accuracy" in only:
            print("## limit accuracy: 2 bastion serve processes sharing Redis\n")
            print("| phase | requests sent | limit allows | admitted | error |\n"
                  "|---|---:|---:|---:|---:|")
            print("\n".join(accuracy(tmp, args.redis, args.duration, args.rate)), flush=True)
        if "decisions" in only:
            decisions_table(args)
        if "proxy" in only:
            proxy_table(tmp, args)
        if "flood" in only:
            flood_table(tmp, args)


def decisions_table(args: argparse.Namespace) -> None:
    gcra, incr = asyncio.run(decisions(args.redis, args.decisions, 32))
    print(f"\n## limiter decisions per second (one process, 32 concurrent, "
          f"{args.decisions} decisions)\n\n| | decisions/s |\n|---|---:|\n"
          f"| RedisBackend (GCRA, EVALSHA) | {gcra:.0f} |\n"
          f"| plain INCR+EXPIRE (pipelined) | {incr:.0f} |\n"
          f"| ratio | {gcra / incr:.2f}x |", flush=True)


def proxy_table(tmp: Path, args: argparse.Namespace) -> None:
    print(f"\n## reverse proxy (wrk, {args.duration:g} s per run)\n\n"
          "| path | p50 ms (1 conn) | p99 ms (1 conn) | req/s (1 conn) | p50 ms (32) | "
          "p99 ms (32) | req/s (32) | p50 vs nginx (1 / 32) | non-2xx+errors |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(proxy(tmp, args.duration)), flush=True)


def flood_table(tmp: Path, args: argparse.Namespace) -> None:
    print(f"\n## flood on loopback ({args.flood_requests} requests, 10 ms apart, "
          f"attack held {args.flood_hold:g} s)\n\n| | success | p50 ms | p99 ms | "
          "p99 vs unloaded |\n|---|---:|---:|---:|---:|")
    print("\n".join(flooding(tmp, args)), flush=True)


if __name__ == "__main__":
    main()
