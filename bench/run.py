#!/usr/bin/env python3
"""Side-by-side benchmark, one run: Bastion first, then the peer (oidc-provider + jose).

    .venv/bin/python bench/run.py                 # -t2 -c16 -d10s, refresh pools sized auto
    .venv/bin/python bench/run.py --duration 5s --pool 2000 --peer-pool 15000

Servers are run one after the other, never both under load at once (the machine has two
cores, shared by the server and wrk). Per side: start the server(s), wrk scenario 1
(client_credentials at /token), mint the refresh-token pool (sized by a short probe run,
lua/refresh_probe.lua), scenario 2 (refresh_token grant with rotation, one pool token per
request), scenario 3 (GET /orders with a bearer JWT), stop the server(s). The wrk scripts
and parameters are the same for both sides (bench/lua/*.lua). Raw outputs go to
bench/out/<stamp>/ (git-ignored) and the table is printed at the end. Exit status is
non-zero if any scenario had a non-2xx response, a socket error, an exhausted refresh pool
or a missing RESULT line.

Only the standard library and httpx (in the project's venv) are used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import html.parser
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LUA = BENCH / "lua"
PEER = BENCH / "peer"
SCENARIOS = ("client_credentials", "refresh", "bearer")
LABELS = {"client_credentials": "client_credentials /token",
          "refresh": "refresh_token /token (rotation)",
          "bearer": "GET /orders (bearer JWT)"}
REDIRECT_URI = "http://127.0.0.1:9/cb"
SCOPE = "openid offline_access order:view"
RESULT_RE = re.compile(r"^RESULT (.*)$", re.M)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --- small helpers -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {duration!r} (e.g. 10s, 1m)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def machine_busy() -> float:
    """CPU-seconds spent busy by the whole machine so far (all CPUs, from /proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) \
        / os.sysconf("SC_CLK_TCK")


def other_load(window: float = 3.0) -> float:
    """Cores' worth of CPU used by the machine during `window` seconds (nothing of ours runs)."""
    b0 = machine_busy()
    time.sleep(window)
    return (machine_busy() - b0) / window


QUIET = {"deadline": 0.0, "threshold": 0.15}   # set from --wait-quiet / --quiet-threshold


def await_quiet(what: str) -> float:
    """Wait (until the --wait-quiet deadline) for other processes to leave the CPUs alone;
    returns the last load seen, in cores. Called before every wrk run and at the start."""
    noise = other_load(2.0)
    while noise > QUIET["threshold"] and time.monotonic() < QUIET["deadline"]:
        log(f"  machine busy ({noise * 100:.0f}% of a core used by other processes), "
            f"waiting before {what}")
        time.sleep(3)
        noise = other_load(2.0)
    if noise > QUIET["threshold"]:
        log(f"  WARNING: {noise * 100:.0f}% of a core in use by other processes before {what}")
    return noise


def cpu_seconds(pid: int) -> float:
    """user+system CPU time of a live process (from /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raised_limits(factor: int = 1000) -> str:
    """The default rate limit rules, ``factor`` times the rate and burst, as JSON."""
    from dataclasses import asdict, replace

    sys.path.insert(0, str(ROOT / "src"))
    from bastion.config import DEFAULT_RATE_LIMITS

    return json.dumps([asdict(replace(r, rate=r.rate * factor, burst=r.burst * factor))
                       for r in DEFAULT_RATE_LIMITS])


def worker_pids(proc: subprocess.Popen[Any], count: int, timeout: float = 60.0) -> list[int]:
    """The worker processes of ``bastion serve --workers N`` (none when N is 1), once all
    of them have had time to start."""
    if count <= 1:
        return []
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    while True:
        children = []
        for pid in map(int, path.read_text().split()):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    children.append(pid)
        if len(children) >= count:
            time.sleep(5)  # each opens its state and binds before it serves
            return children
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(children)} of {count} workers started")
        time.sleep(0.2)


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f}s")


def stop(proc: subprocess.Popen[Any] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on SIGTERM, killing pid {proc.pid}")
        proc.kill()
        proc.wait(timeout=5)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


class HiddenInputs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.values[a["name"] or ""] = a.get("value") or ""


def hidden_inputs(page: str) -> dict[str, str]:
    p = HiddenInputs()
    p.feed(page)
    return p.values


# --- wrk --------------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    req_s: float = float("nan")
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    non2xx: int = -1
    socket_errors: int = -1
    server_cpu: float = float("nan")   # server CPU-seconds per wall second during the run
    wrk_cpu: float = float("nan")      # wrk CPU-seconds per wall second
    other_cpu: float = float("nan")    # everything else on the machine (noise), cores
    attempts: int = 1
    problems: list[str] = field(default_factory=list)


@dataclass
class Args:
    threads: int
    conns: int
    duration: str
    timeout: str | None


def run_wrk(a: Args, script: str, url: str, script_args: list[str], out: Path,
            server_pids: list[int]) -> Result:
    cmd = ["wrk", f"-t{a.threads}", f"-c{a.conns}", f"-d{a.duration}", "--latency"]
    if a.timeout:
        cmd.append(f"--timeout={a.timeout}")
    cmd += ["-s", str(LUA / script), url]
    if script_args:
        cmd += ["--", *script_args]
    await_quiet(out.name)
    shown = [c if len(c) < 80 else c[:20] + "..." for c in cmd]
    log("  " + " ".join(shown))
    cpu0 = sum(cpu_seconds(p) for p in server_pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=seconds(a.duration) + 60)
    wall = time.monotonic() - t0
    busy1 = machine_busy()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = sum(cpu_seconds(p) for p in server_pids)
    text = proc.stdout + (("\n--- stderr ---\n" + proc.stderr) if proc.stderr else "")
    out.write_text(f"$ {' '.join(cmd)}\n{text}")
    m = RESULT_RE.search(proc.stdout)
    r = Result(name=script.removesuffix(".lua"))
    if proc.returncode != 0 or not m:
        r.problems.append(f"wrk exit {proc.returncode}, RESULT line {'found' if m else 'MISSING'}"
                          f" (see {out})")
        return r
    kv = dict(item.split("=", 1) for item in m.group(1).split())
    r.name = kv["name"]
    r.req_s, r.p50_ms, r.p90_ms, r.p99_ms = (float(kv[k]) for k in
                                             ("req_s", "p50_ms", "p90_ms", "p99_ms"))
    r.requests, r.non2xx, r.socket_errors = (int(kv[k]) for k in
                                             ("requests", "non2xx", "socket_errors"))
    r.server_cpu = (cpu1 - cpu0) / wall
    r.wrk_cpu = ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall
    r.other_cpu = max(0.0, (busy1 - busy0) / wall - r.server_cpu - r.wrk_cpu)
    if r.non2xx:
        r.problems.append(f"{r.non2xx} non-2xx responses")
    if r.socket_errors:
        r.problems.append(f"{r.socket_errors} socket errors (timeouts are left out of wrk's "
                          "latency figures, so p99 is understated; see --wrk-timeout)")
    if "EXHAUSTED" in proc.stdout:
        r.problems.append("refresh token pool exhausted (req/s under-reported): raise "
                          "--pool-max / --peer-pool-max, or give --pool / --peer-pool")
    if r.requests == 0:
        r.problems.append("no requests completed")
    return r


# --- Bastion ----------------------------------------------------------------------------------
BASTION = ROOT / ".venv" / "bin" / "bastion"


def bastion_cli(args: list[str], data_dir: Path, stdin: str | None = None) -> dict[str, Any]:
    proc = subprocess.run([str(BASTION), *args, "--data-dir", str(data_dir), "--json"],
                          input=stdin, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise BenchError(f"bastion {' '.join(args[:2])} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-500:]}")
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


@dataclass
class BastionClient:
    base: str
    client_id: str
    secret: str
    username: str
    password: str


async def mint_bastion(c: BastionClient, n: int, concurrency: int,
                       deadline_s: float) -> list[str]:
    """`n` refresh tokens from Bastion via the authorization code flow with PKCE: log in
    and consent once, then (same cookie jar: session + remembered consent) every
    GET /authorize redirects straight back with a code, exchanged at POST /token.
    Stops early (with a warning) when `deadline_s` has passed."""
    base, client_id, secret = c.base, c.client_id, c.secret
    username, password = c.username, c.password
    auth = httpx.BasicAuth(quote(client_id, safe=""), quote(secret, safe=""))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, follow_redirects=False, limits=limits,
                                 timeout=30.0) as http:

        async def authorize() -> tuple[httpx.Response, str, str]:
            verifier, challenge = pkce()
            state = secrets.token_urlsafe(8)
            q = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
                 "scope": SCOPE, "state": state, "code_challenge": challenge,
                 "code_challenge_method": "S256"}
            return await http.get("/authorize?" + urlencode(q)), verifier, state

        def expect_redirect(res: httpx.Response, what: str) -> str:
            if res.status_code not in (302, 303):
                raise BenchError(f"{what}: expected a redirect, got HTTP {res.status_code}: "
                                 f"{res.text[:300]}")
            return urljoin(base + "/", res.headers["location"])

        def code_from(location: str, state: str) -> str:
            if not location.startswith(REDIRECT_URI + "?"):
                raise BenchError(f"expected a redirect to the client, got {location[:200]}")
            q = parse_qs(urlsplit(location).query)
            if q.get("state") != [state] or "code" not in q:
                raise BenchError(f"bad authorization response: {location[:300]}")
            return q["code"][0]

        async def exchange(code: str, verifier: str) -> str:
            res = await http.post("/token", auth=auth, data={
                "grant_type": "authorization_code", "code": code,
                "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
            body = res.json()
            if res.status_code != 200 or "refresh_token" not in body:
                raise BenchError(f"code exchange: HTTP {res.status_code} {body}")
            return str(body["refresh_token"])

        # First flow, interactive: login page, then consent page (remembered afterwards).
        res, verifier, state = await authorize()
        login_url = expect_redirect(res, "GET /authorize")
        if "/login" not in login_url:
            raise BenchError(f"expected the login page, got {login_url}")
        form = hidden_inputs((await http.get(login_url)).text)
        res = await http.post("/login", data={"username": username, "password": password,
                                              "r": form["r"], "csrf": form["csrf"]})
        nxt = expect_redirect(res, "POST /login")
        if "/consent" in nxt:
            form = hidden_inputs((await http.get(nxt)).text)
            res = await http.post("/consent", data={"decision": "allow", "r": form["r"],
                                                    "csrf": form["csrf"]})
            nxt = expect_redirect(res, "POST /consent")
        tokens = [await exchange(code_from(nxt, state), verifier)]

        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())

    # Later flows: session + remembered consent => /authorize redirects with a code. These
    # use a bare HTTP/1.1 client on keep-alive connections: httpx (with its cookie jar)
    # costs ~5 ms of CPU per flow, as much as Bastion itself, on the same two cores.
    u = urlsplit(base)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    basic = "Basic " + base64.b64encode(
        f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()
    remaining = n - 1
    deadline = time.monotonic() + deadline_s

    async def worker() -> None:
        nonlocal remaining
        conn = RawHTTP(host, port)
        try:
            while remaining > 0:
                if time.monotonic() > deadline:
                    log(f"WARNING: minting stopped after {deadline_s:.0f}s with "
                        f"{len(tokens)}/{n} tokens (--mint-timeout)")
                    remaining = 0
                    return
                remaining -= 1
                verifier, challenge = pkce()
                state = secrets.token_urlsafe(8)
                q = {"response_type": "code", "client_id": client_id,
                     "redirect_uri": REDIRECT_URI, "scope": SCOPE, "state": state,
                     "code_challenge": challenge, "code_challenge_method": "S256"}
                status, headers, body = await conn.request(
                    "GET", "/authorize?" + urlencode(q), {"Cookie": cookie})
                if status not in (302, 303):
                    raise BenchError(f"GET /authorize: HTTP {status} {body[:300]!r}")
                code = code_from(urljoin(base + "/", headers.get("location", "")), state)
                form = urlencode({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
                status, headers, body = await conn.request(
                    "POST", "/token", {"Authorization": basic,
                                       "Content-Type": "application/x-www-form-urlencoded"},
                    form.encode())
                answer = json.loads(body)
                if status != 200 or "refresh_token" not in answer:
                    raise BenchError(f"code exchange: HTTP {status} {answer}")
                tokens.append(str(answer["refresh_token"]))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens


class RawHTTP:
    """Minimal HTTP/1.1 keep-alive client for one known server (Content-Length bodies)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        if method != "GET":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        got: dict[str, str] = {}
        for line in header_lines:
            if line:
                k, _, v = line.partition(":")
                got[k.strip().lower()] = v.strip()
        if "chunked" in got.get("transfer-encoding", ""):
            raise BenchError(f"{method} {target}: chunked responses are not supported")
        length = int(got.get("content-length", "0"))
        data = await self.reader.readexactly(length) if length else b""
        if got.get("connection", "").lower() == "close":
            self.close()
        return status, got, data


def measure(opt: argparse.Namespace, path: Path, attempt: Callable[[int], Result]) -> Result:
    """`attempt(i)` runs one measurement (with whatever preparation it needs) into `path`.
    It is repeated while the rest of the machine was busy during it (more than
    --quiet-threshold), at most --retries times and only before the --wait-quiet deadline.
    The output of a disturbed attempt is kept as <name>.disturbed<i>.txt."""
    i = 0
    while True:
        r = attempt(i)
        r.attempts = i + 1
        if not r.other_cpu > opt.quiet_threshold or i >= opt.retries \
                or time.monotonic() > QUIET["deadline"]:
            return r
        log(f"  {path.stem}: other processes used {r.other_cpu * 100:.0f}% of a core during "
            f"the run; repeating it")
        path.rename(path.with_suffix(f".disturbed{i + 1}.txt"))
        i += 1


def warmup(opt: argparse.Namespace, wa: Args, script: str, url: str, args: list[str],
           out: Path) -> None:
    """Optional (--warmup): load the token endpoint before measuring; output kept apart."""
    if opt.warmup and seconds(opt.warmup) > 0:
        log(f"  warm-up {opt.warmup} (not measured)")
        run_wrk(Args(wa.threads, wa.conns, opt.warmup, wa.timeout), script, url, args,
                out / "warmup.txt", [])


def mint_to_file(c: BastionClient, n: int, opt: argparse.Namespace, path: Path,
                 what: str) -> tuple[int, float]:
    log(f"Bastion: minting {n} refresh tokens {what}({opt.mint_concurrency} flows in flight)")
    t0 = time.monotonic()
    tokens = asyncio.run(mint_bastion(c, n, opt.mint_concurrency, opt.mint_timeout))
    took = time.monotonic() - t0
    if len(set(tokens)) != len(tokens):
        raise BenchError("Bastion returned duplicate refresh tokens")
    path.write_text("\n".join(tokens) + "\n")
    log(f"Bastion: minted {len(tokens)} in {took:.1f}s ({len(tokens) / took:.0f}/s)")
    return len(tokens), took


def pool_size(rate: float, duration: float, margin: float) -> int:
    """Tokens for one refresh run at `rate` req/s, with a margin (a pool cannot be topped up
    mid-run; an exhausted pool fails the run loudly). Bastion's 2-second probe has been off
    by up to ~±30% of the 10-second rate: margin 1.5. The peer's underestimates (its JIT is
    still warming up at probe time): margin 1.75."""
    return int(rate * duration * margin) + 300


PROBE_RE = re.compile(r"^PROBE rate=([\d.]+) responses=(\d+) exhausted=(\d)", re.M)


def probe_rate(opt: argparse.Namespace, wa: Args, url: str, script_args: list[str],
               out: Path, pids: list[int]) -> float:
    """Refresh rate measured by lua/refresh_probe.lua on a small pool, for sizing the real
    pool. The script times each thread from its first request to its last response, so
    the rate holds even when the small pool runs out before -d ends."""
    r = run_wrk(Args(wa.threads, wa.conns, opt.probe_duration, wa.timeout),
                "refresh_probe.lua", url, script_args, out / "refresh_probe.txt", pids)
    m = PROBE_RE.search((out / "refresh_probe.txt").read_text())
    if r.non2xx or not m or float(m.group(1)) <= 0:
        raise BenchError(f"refresh probe failed, see {out / 'refresh_probe.txt'}: {r.problems}")
    return float(m.group(1))


def bench_bastion(opt: argparse.Namespace, wa: Args, out: Path) -> dict[str, Result]:
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    port = opt.bastion_port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BASTION_ADMIN_PASSWORD=secrets.token_urlsafe(18),
               # the limits stay on (every request pays for its decision), 1000x the
               # defaults: one client from one address is all a benchmark has
               BASTION_RATE_LIMIT_RULES=raised_limits())
    env.pop("BASTION_DATA_DIR", None)
    started = git_state()
    (out / "commit.txt").write_text(started + "\n")
    log(f"Bastion: starting on {base} (data {data_dir}), code at {started}")
    server_log = (out / "server.log").open("w")
    proc = subprocess.Popen([str(BASTION), "serve", "--dev", "--data-dir", str(data_dir),
                             "--port", str(port), "--log-level", "warning",
                             "--workers", str(opt.workers)],
                            stdout=server_log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    results: dict[str, Result] = {}
    mint_notes: list[str] = []
    try:
        wait_http(f"{base}/healthz", proc)
        client = bastion_cli(["clients", "create", "--name", "bench",
                              "--redirect-uri", REDIRECT_URI,
                              "--grant-type", "client_credentials",
                              "--grant-type", "authorization_code",
                              "--grant-type", "refresh_token",
                              "--scope", "openid", "--scope", "offline_access",
                              "--scope", "order:view", "--role", "order:view"], data_dir)
        cid, csecret = client["client_id"], client["client_secret"]
        password = secrets.token_urlsafe(18)
        bastion_cli(["users", "create", "benchuser", "--password-stdin",
                     "--role", "order:view"], data_dir, stdin=password + "\n")
        bc = BastionClient(base, cid, csecret, "benchuser", password)
        pids = [proc.pid, *worker_pids(proc, opt.workers)]

        warmup(opt, wa, "client_credentials.lua", f"{base}/token", [cid, csecret, "order:view"],
               out)
        log("Bastion: scenario 1, client_credentials")
        cc_out = out / "client_credentials.txt"
        results["client_credentials"] = measure(opt, cc_out, lambda _: run_wrk(
            wa, "client_credentials.lua", f"{base}/token", [cid, csecret, "order:view"],
            cc_out, pids))

        # Refresh pool. Minting is slow on Bastion (~150 code flows/s), so with --pool auto
        # a small pool is minted first, a short wrk probe with the same -t/-c measures the
        # refresh rate, and the real pool is sized from that. Probe tokens are never reused.
        if opt.pool == "auto":
            probe_file = out / "refresh_probe.tokens.txt"
            got, took = mint_to_file(bc, opt.probe_pool, opt, probe_file, "for the probe ")
            mint_notes.append(f"probe pool: {got} tokens in {took:.1f}s")
            log("Bastion: refresh rate probe")
            rate = probe_rate(opt, wa, f"{base}/token",
                              [str(probe_file), str(wa.threads), cid, csecret], out, pids)
            n = min(pool_size(rate, seconds(wa.duration), 1.5), opt.pool_max)
            mint_notes.append(f"pool auto: probe measured {rate:.0f} refresh/s -> {n} tokens "
                              f"(cap --pool-max {opt.pool_max})")
            log(f"Bastion: {mint_notes[-1]}")
        else:
            n = int(opt.pool)
        pool_file = out / "refresh.tokens.txt"

        def refresh(i: int) -> Result:
            what = "" if i == 0 else f"again, attempt {i + 1}, "
            got, took = mint_to_file(bc, n, opt, pool_file, what)
            mint_notes.append(f"pool: minted {got} refresh tokens in {took:.1f}s "
                              f"({got / took:.0f}/s), {opt.mint_concurrency} flows in flight")
            log("Bastion: scenario 2, refresh_token")
            return run_wrk(wa, "refresh.lua", f"{base}/token",
                           [str(pool_file), str(wa.threads), cid, csecret],
                           out / "refresh.txt", pids)

        results["refresh"] = measure(opt, out / "refresh.txt", refresh)

        res = httpx.post(f"{base}/token", auth=(cid, csecret),
                         data={"grant_type": "client_credentials", "scope": "order:view"})
        res.raise_for_status()
        token = res.json()["access_token"]
        check = httpx.get(f"{base}/orders", headers={"Authorization": f"Bearer {token}"})
        if check.status_code != 200:
            raise BenchError(f"GET /orders with the bench token: HTTP {check.status_code} "
                             f"{check.text[:200]}")
        log("Bastion: scenario 3, GET /orders")
        results["bearer"] = measure(opt, out / "bearer.txt", lambda _: run_wrk(
            wa, "bearer.lua", f"{base}/orders", [token], out / "bearer.txt", pids))
    finally:
        (out / "mint.txt").write_text("\n".join(mint_notes) + "\n")
        stop(proc, "bastion")
        server_log.close()
        if not opt.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    return results


# --- peer (same sequence as bench/peer/run.sh) ------------------------------------------------
def bench_peer(opt: argparse.Namespace, wa: Args, out: Path) -> dict[str, Result]:
    out.mkdir(parents=True, exist_ok=True)
    if not (PEER / "node_modules").is_dir():
        log("peer: npm ci")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEER, check=True,
                       timeout=300)
    pp, rp = opt.peer_port or free_port(), opt.resource_port or free_port()
    issuer, rbase = f"http://127.0.0.1:{pp}", f"http://127.0.0.1:{rp}"
    env = dict(os.environ, NODE_ENV="production")
    procs: list[subprocess.Popen[Any]] = []
    logs = []
    results: dict[str, Result] = {}
    log(f"peer: starting oidc-provider on {issuer}, resource server on {rbase}")
    try:
        for name, argv in (("provider", ["node", "provider.mjs", str(pp)]),
                           ("resource", ["node", "resource.mjs", str(rp), issuer])):
            f = (out / f"{name}.log").open("w")
            logs.append(f)
            procs.append(subprocess.Popen(argv, cwd=PEER, env=env, stdout=f,
                                          stderr=subprocess.STDOUT))
        wait_http(f"{issuer}/jwks", procs[0])
        provider_pid, resource_pid = procs[0].pid, procs[1].pid

        warmup(opt, wa, "client_credentials.lua", f"{issuer}/token", [], out)
        log("peer: scenario 1, client_credentials")
        cc_out = out / "client_credentials.txt"
        results["client_credentials"] = measure(opt, cc_out, lambda _: run_wrk(
            wa, "client_credentials.lua", f"{issuer}/token", [], cc_out, [provider_pid]))

        notes: list[str] = []

        def mint(count: int, path: Path, what: str) -> None:
            log(f"peer: minting {count} refresh tokens {what}(32 in flight)")
            t0 = time.monotonic()
            proc = subprocess.run(["node", "mint_refresh.mjs", str(count), str(path),
                                   issuer, "32"], cwd=PEER, env=env, capture_output=True,
                                  text=True, timeout=opt.mint_timeout)
            if proc.returncode != 0:
                raise BenchError(f"peer mint_refresh.mjs failed: {proc.stderr[-500:]}")
            notes.append(proc.stdout.strip().replace(str(out) + "/", ""))
            (out / "mint.txt").write_text("\n".join(notes) + "\n")
            log(f"peer: {proc.stdout.strip()} (wall {time.monotonic() - t0:.1f}s)")

        # Refresh pool, sized like Bastion's (the peer mints ~300-400 tokens/s).
        if opt.peer_pool == "auto":
            probe_file = out / "refresh_probe.tokens.txt"
            mint(opt.peer_probe_pool, probe_file, "for the probe ")
            log("peer: refresh rate probe")
            rate = probe_rate(opt, wa, f"{issuer}/token", [str(probe_file), str(wa.threads)],
                              out, [provider_pid])
            n = min(pool_size(rate, seconds(wa.duration), 1.75), opt.peer_pool_max)
            notes.append(f"pool auto: probe measured {rate:.0f} refresh/s -> {n} tokens "
                         f"(cap --peer-pool-max {opt.peer_pool_max})")
            log(f"peer: {notes[-1]}")
        else:
            n = int(opt.peer_pool)
        pool_file = out / "refresh.tokens.txt"

        def refresh(i: int) -> Result:
            mint(n, pool_file, "" if i == 0 else f"again (attempt {i + 1}) ")
            log("peer: scenario 2, refresh_token")
            return run_wrk(wa, "refresh.lua", f"{issuer}/token",
                           [str(pool_file), str(wa.threads)], out / "refresh.txt",
                           [provider_pid])

        results["refresh"] = measure(opt, out / "refresh.txt", refresh)

        res = httpx.post(f"{issuer}/token", auth=("bench", "bench-secret"),
                         data={"grant_type": "client_credentials", "scope": "order:view"})
        res.raise_for_status()
        token = res.json()["access_token"]
        check = httpx.get(f"{rbase}/orders", headers={"Authorization": f"Bearer {token}"})
        if check.status_code != 200:
            raise BenchError(f"peer GET /orders: HTTP {check.status_code} {check.text[:200]}")
        log("peer: scenario 3, GET /orders")
        results["bearer"] = measure(opt, out / "bearer.txt", lambda _: run_wrk(
            wa, "bearer.lua", f"{rbase}/orders", [token], out / "bearer.txt", [resource_pid]))
    finally:
        for p, name in zip(procs, ("provider", "resource"), strict=False):
            stop(p, name)
        for f in logs:
            f.close()
    return results


# --- report -----------------------------------------------------------------------------------
def fmt(x: float, nd: int = 0) -> str:
    return "-" if x != x else f"{x:,.{nd}f}"


def table(bastion: dict[str, Result], peer: dict[str, Result]) -> str:
    rows = [("scenario", "Bastion req/s", "p50 ms", "p99 ms", "peer req/s", "p50 ms", "p99 ms",
             "ratio B/peer")]
    for s in SCENARIOS:
        b, p = bastion.get(s, Result(s)), peer.get(s, Result(s))
        ratio = b.req_s / p.req_s if p.req_s and p.req_s == p.req_s else float("nan")
        rows.append((LABELS[s], fmt(b.req_s), fmt(b.p50_ms, 2), fmt(b.p99_ms, 2),
                     fmt(p.req_s), fmt(p.p50_ms, 2), fmt(p.p99_ms, 2), fmt(ratio, 2)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 1) + (":" if j else "-")
                                        for j, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def cpu_table(bastion: dict[str, Result], peer: dict[str, Result]) -> str:
    """CPU use during each wrk run, in % of one core (the machine has nproc x 100%)."""
    lines = ["| CPU, % of one core | Bastion | wrk | rest of machine | peer | wrk "
             "| rest of machine |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in SCENARIOS:
        b, p = bastion.get(s, Result(s)), peer.get(s, Result(s))
        cells = [fmt(x * 100) for x in (b.server_cpu, b.wrk_cpu, b.other_cpu,
                                        p.server_cpu, p.wrk_cpu, p.other_cpu)]
        lines.append(f"| {LABELS[s]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def git_state() -> str:
    """Short HEAD, plus a mark when src/ or pyproject.toml differ from it (the code that a
    server started now would run)."""
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    dirty = sh("git", "status", "--porcelain", "--", "src", "pyproject.toml")
    return sh("git", "rev-parse", "--short", "HEAD") + (
        " (+ uncommitted changes in src/ or pyproject.toml)" if dirty else "")


def versions(out: Path) -> dict[str, str]:
    def sh(*cmd: str, cwd: Path = ROOT) -> str:
        try:
            return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    def pkg(name: str) -> str:
        try:
            meta = json.loads((PEER / "node_modules" / name / "package.json").read_text())
            return str(meta["version"])
        except (OSError, ValueError, KeyError):
            return "?"

    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    started = out / "bastion" / "commit.txt"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "bastion_commit": started.read_text().strip() if started.exists() else git_state(),
        "python": sys.version.split()[0],
        "uvicorn": sh(str(ROOT / ".venv/bin/python"), "-c",
                      "import uvicorn; print(uvicorn.__version__)"),
        "node": sh("node", "--version"),
        "oidc-provider": pkg("oidc-provider"),
        "jose": pkg("jose"),
        "wrk": (sh("wrk", "-v").splitlines() or ["?"])[0],
        "cpus": sh("nproc"),
        "cpu_model": model,
    }


def pool_arg(v: str) -> str | int:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError("a pool is a number or 'auto'") from None
    if n < 10:
        raise argparse.ArgumentTypeError("a pool needs at least 10 tokens")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", "-t", type=int, default=2, help="wrk -t (default 2)")
    ap.add_argument("--conns", "-c", type=int, default=16, help="wrk -c (default 16)")
    ap.add_argument("--duration", "-d", default="10s", help="wrk -d (default 10s)")
    ap.add_argument("--warmup", default="0s",
                    help="client_credentials load before measuring, on both sides "
                         "(default 0s: none, as bench/peer/run.sh)")
    ap.add_argument("--wrk-timeout", default=None, help="wrk --timeout (default: wrk's 2s)")
    ap.add_argument("--pool", default="auto", type=pool_arg,
                    help="Bastion refresh tokens to mint, or 'auto' (default): mint "
                         "--probe-pool tokens, measure the refresh rate with a "
                         "--probe-duration wrk run (lua/refresh_probe.lua), then mint "
                         "rate x duration x 1.5 + 300 (peer: x 1.75), capped")
    ap.add_argument("--probe-pool", type=int, default=1000,
                    help="Bastion tokens for the auto-sizing probe (default 1000)")
    ap.add_argument("--peer-probe-pool", type=int, default=3000,
                    help="peer tokens for the auto-sizing probe (default 3000)")
    ap.add_argument("--probe-duration", default="2s", help="probe wrk -d (default 2s)")
    ap.add_argument("--pool-max", type=int, default=15000,
                    help="cap for the auto-sized Bastion pool (default 15000: ~90 s of "
                         "minting, enough for ~1400 refresh/s over 10 s)")
    ap.add_argument("--peer-pool-max", type=int, default=40000,
                    help="cap for the auto-sized peer pool (default 40000)")
    ap.add_argument("--peer-pool", default="auto", type=pool_arg,
                    help="peer refresh tokens to mint, or 'auto' (default): as --pool, "
                         "with --peer-probe-pool")
    ap.add_argument("--mint-concurrency", type=int, default=4,
                    help="Bastion minting: flows in flight (default 4; more only adds "
                         "database contention)")
    ap.add_argument("--mint-timeout", type=float, default=180.0,
                    help="stop minting a pool after this many seconds (default 180)")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="before each wrk run, wait for the machine to be idle, until this "
                         "many seconds after the start (default 0: never wait)")
    ap.add_argument("--quiet-threshold", type=float, default=0.15,
                    help="idle means other processes use less than this many cores "
                         "(default 0.15)")
    ap.add_argument("--retries", type=int, default=2,
                    help="repeat a scenario during which other processes used the CPU, at "
                         "most this many times, and only until the --wait-quiet deadline "
                         "(default 2; so never without --wait-quiet)")
    ap.add_argument("--only", choices=("bastion", "peer"), help="run one side only")
    ap.add_argument("--workers", type=int, default=1,
                    help="bastion serve --workers (default 1)")
    ap.add_argument("--bastion-port", type=int, help="default: a free port")
    ap.add_argument("--peer-port", type=int, help="oidc-provider port (default: a free port)")
    ap.add_argument("--resource-port", type=int, help="peer resource server port (default: free)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default bench/out/<UTC stamp>)")
    ap.add_argument("--keep-data", action="store_true", help="keep Bastion's temp data dir")
    opt = ap.parse_args()
    seconds(opt.duration), seconds(opt.warmup), seconds(opt.probe_duration)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    if not BASTION.exists():
        print(f"{BASTION} not found: create the venv first (make install / pip install -e .)",
              file=sys.stderr)
        return 2

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = opt.out or BENCH / "out" / stamp
    out.mkdir(parents=True, exist_ok=True)
    wa = Args(opt.threads, opt.conns, opt.duration, opt.wrk_timeout)
    command = " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]])
    t0 = time.monotonic()
    log(f"output: {out}")
    QUIET.update(deadline=t0 + opt.wait_quiet, threshold=opt.quiet_threshold)
    noise = await_quiet("the run")
    bastion: dict[str, Result] = {}
    peer: dict[str, Result] = {}
    failure = None
    try:
        if opt.only != "peer":
            bastion = bench_bastion(opt, wa, out / "bastion")
        if opt.only != "bastion":
            peer = bench_peer(opt, wa, out / "peer")
    except (BenchError, subprocess.SubprocessError, httpx.HTTPError, OSError) as err:
        failure = f"{type(err).__name__}: {err}"
    except KeyboardInterrupt:
        failure = "interrupted"
    elapsed = time.monotonic() - t0

    info = versions(out)
    text = [f"wrk -t{opt.threads} -c{opt.conns} -d{opt.duration} --latency"
            + (f" --timeout={opt.wrk_timeout}" if opt.wrk_timeout else "")
            + f"; warm-up {opt.warmup}; Bastion --workers {opt.workers}; pools: Bastion "
            f"{opt.pool}, peer {opt.peer_pool}; "
            f"total {elapsed:.0f}s",
            f"machine load before the run (other processes): {noise * 100:.0f}% of a core",
            "", table(bastion, peer), "", cpu_table(bastion, peer), ""]
    for side in ("bastion", "peer"):
        f = out / side / "mint.txt"
        if f.exists():
            text += [f"{side} refresh pool: " + "; ".join(
                line.strip() for line in f.read_text().splitlines() if line.strip())]
    text.append("")
    disturbed = [f"{side} {r.name}: {r.other_cpu * 100:.0f}%"
                 for side, res in (("Bastion", bastion), ("peer", peer))
                 for r in res.values() if r.other_cpu > opt.quiet_threshold]
    repeated = [f"{side} {r.name} ({r.attempts} attempts)"
                for side, res in (("Bastion", bastion), ("peer", peer))
                for r in res.values() if r.attempts > 1]
    if repeated:
        text.append("Repeated because other processes used the CPU: " + ", ".join(repeated)
                    + " (the disturbed outputs are kept as *.disturbed<N>.txt)")
    if disturbed:
        text.append("WARNING: other processes used CPU during: " + ", ".join(disturbed)
                    + " (of one core); rerun on an idle machine")
    problems = [f"{side} {r.name}: {p}" for side, res in (("Bastion", bastion), ("peer", peer))
                for r in res.values() for p in r.problems]
    if failure:
        problems.append(f"run aborted: {failure}")
    if problems:
        text += ["FAILED:"] + [f"  - {p}" for p in problems]
    else:
        text.append("OK: all responses 2xx, no socket errors, refresh pools not exhausted")
    report = "\n".join(text)
    (out / "summary.txt").write_text(f"$ {command}\n{json.dumps(info, indent=1)}\n\n{report}\n")
    (out / "summary.json").write_text(json.dumps({
        "command": command, "info": info, "elapsed_s": round(elapsed, 1),
        "load_before": round(noise, 3),
        "params": {"threads": opt.threads, "conns": opt.conns, "duration": opt.duration,
                   "pool": opt.pool, "peer_pool": opt.peer_pool, "warmup": opt.warmup,
                   "wrk_timeout": opt.wrk_timeout},
        "bastion": {k: vars(v) for k, v in bastion.items()},
        "peer": {k: vars(v) for k, v in peer.items()},
        "problems": problems}, indent=1, default=str))
    latest = BENCH / "out" / "latest"
    if out.parent == BENCH / "out":
        try:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(out.name)
        except OSError:
            pass
    print(report)
    print(f"\nraw outputs: {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
