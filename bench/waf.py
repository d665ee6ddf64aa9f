"""Bastion's WAF vs Apache + ModSecurity 2 + OWASP CRS, side by side in one run, over HTTP.

    .venv/bin/python bench/waf.py                         # committed corpus, PL1 and PL2
    .venv/bin/python bench/waf.py --corpus bench/out/waf-external   # + the public-source corpus
    .venv/bin/python bench/waf.py --only modsecurity      # or --only bastion

Servers (each started, measured and stopped in turn; never two under load at once):

- ``modsecurity-plN``: Debian's apache2 + libapache2-mod-security2 + modsecurity-crs (3.3),
  ``SecRuleEngine On``, CRS at paranoia N, configured by ``bench/peers/modsecurity/setup.sh``
  in a temp dir (its own ServerRoot, pid and logs); the backend is a mod_lua handler answering
  200 "ok". ``modsecurity-off``: the same Apache without ModSecurity.
- ``bastion-plN``: a bare Starlette app answering 200 "ok" behind
  ``bastion.edge.waf.middleware.WafMiddleware`` at paranoia N, under uvicorn
  (``bench/waf_app.py``). ``bastion-off``: the same app without the middleware.

Every corpus request is sent with httpx (or a raw socket when httpx would alter it: dot
segments in the target, conflicting framing headers), one at a time, ``Host: localhost``. A
request is *refused* when the answer is not 2xx (403 from a WAF; 400/501 from the server's own
parser count too and are shown for the WAF-off baselines) or when no answer comes. Detection =
refused attacks / attacks; false positives = refused benign / benign.

CPU: for (a) a GET with a query, (b) a 2 KiB JSON POST and (c) a 64 KiB form POST, N requests
each; CPU = utime + stime from /proc of every process of the server (Apache's parent and
children, uvicorn's one process) after minus before, divided by N. "Added" = WAF on - WAF off.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "edge" / "waf" / "corpus"
PEER = ROOT / "bench" / "peers" / "modsecurity"
TICK = os.sysconf("SC_CLK_TCK")
FRAMING = {"transfer-encoding", "content-length"}


# --- corpus ------------------------------------------------------------------------------------

def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def body_of(rec: dict[str, Any]) -> bytes | None:
    if "body_b64" in rec:
        return base64.b64decode(rec["body_b64"])
    if "body" in rec:
        return str(rec["body"]).encode()
    return None


# --- servers -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout} s")


def proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_seconds(root: int) -> float:
    total = 0
    for pid in proc_tree(root):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICK


@dataclass
class Server:
    name: str
    side: str
    paranoia: int
    waf: bool
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    tmp: str = ""
    log: Any = None

    def start(self) -> None:
        self.port = free_port()
        if self.side == "modsecurity":
            self.tmp = tempfile.mkdtemp(prefix="bench-modsec-")
            subprocess.run([str(PEER / "setup.sh"), self.tmp, str(self.port), str(self.paranoia),
                            "on" if self.waf else "off"], check=True, stdout=subprocess.DEVNULL)
            cmd = ["/usr/sbin/apache2", "-f", f"{self.tmp}/httpd.conf", "-DFOREGROUND"]
        else:
            cmd = [sys.executable, str(ROOT / "bench" / "waf_app.py"), "--port", str(self.port),
                   "--paranoia", str(self.paranoia), "--waf", "on" if self.waf else "off"]
        # the server's own log lines (a WAF logs each refusal) go to a file, not the terminal
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self.log is not None:
            self.log.close()

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)


# --- client ----------------------------------------------------------------------------------

def needs_raw(rec: dict[str, Any]) -> bool:
    names = [h[0].lower() for h in rec["headers"]]
    if any(n in FRAMING for n in names):
        return True
    try:
        url = httpx.URL("http://localhost" + rec["target"])
    except Exception:  # noqa: BLE001
        return True
    return url.raw_path.decode("ascii", "replace") != rec["target"]


def send_raw(port: int, rec: dict[str, Any], timeout: float) -> int:
    body = body_of(rec) or b""
    names = {h[0].lower() for h in rec["headers"]}
    lines = [f"{rec['method']} {rec['target']} HTTP/1.1", f"Host: localhost:{port}"]
    lines += [f"{k}: {v}" for k, v in rec["headers"]]
    if body and not names & FRAMING:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as s:
            s.sendall(data)
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        parts = buf.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except OSError:
        return 0


def send(client: httpx.Client, port: int, rec: dict[str, Any], timeout: float) -> int:
    if needs_raw(rec):
        return send_raw(port, rec, timeout)
    try:
        r = client.request(rec["method"], rec["target"], headers=[tuple(h) for h in rec["headers"]],
                           content=body_of(rec))
        return r.status_code
    except (httpx.TransportError, UnicodeEncodeError, ValueError):
        return send_raw(port, rec, timeout)


@contextlib.contextmanager
def client_for(port: int, timeout: float) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://localhost:{port}", timeout=timeout,
                      headers={"accept-encoding": "identity"}) as c:
        yield c


# --- measurements ----------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    outcomes: dict[str, int] = field(default_factory=dict)  # corpus id -> status (0: no answer)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    cpu_status: dict[str, Counter[int]] = field(default_factory=dict)


def run_corpus(server: Server, records: list[dict[str, Any]], timeout: float,
               progress: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    task = progress.add_task(f"{server.name} corpus", total=len(records))
    with client_for(server.port, timeout) as client:
        for rec in records:
            out[rec["id"]] = send(client, server.port, rec, timeout)
            progress.advance(task)
    progress.remove_task(task)
    return out


def cpu_cases(seed_text: str) -> dict[str, dict[str, Any]]:
    words = seed_text.split()
    doc: dict[str, Any] = {"order_id": 1042, "customer": {"name": "Jane Doe",
                                                          "email": "jane@example.com"},
                           "items": [], "notes": ""}
    i = 0
    while len(json.dumps(doc)) < 2048 - 40:
        doc["items"].append({"sku": f"SKU-{i:04d}", "qty": 1 + i % 3, "price": 9.5 + i,
                             "title": " ".join(words[i % 40:i % 40 + 4])})
        i += 1
    body = json.dumps(doc).encode()
    body += b" " * (2048 - len(body))
    fields, n = [], 0
    while len(urlencode(fields)) < 65536 - 120:
        fields.append((f"field{n}", " ".join(words[n % 50:n % 50 + 12])))
        n += 1
    form = urlencode(fields).encode()[:65536]
    form = form[: form.rfind(b"&")]
    return {
        "get_query": {"method": "GET", "target": "/api/v1/products?q=cast+iron+pan&page=2"
                      "&sort=price&lang=en", "headers": [["accept", "application/json"]]},
        "json_2k": {"method": "POST", "target": "/api/v1/orders", "body": body.decode(),
                    "headers": [["content-type", "application/json"]]},
        "form_64k": {"method": "POST", "target": "/account/profile", "body": form.decode(),
                     "headers": [["content-type", "application/x-www-form-urlencoded"]]},
    }


TEXT = ("the quick brown fox jumps over a lazy dog while seven happy customers order fresh "
        "bread and green tea from a small shop near the river bank every morning before work "
        "and then walk home slowly through the park talking about books music football games "
        "holidays recipes gardens weather trains bicycles coffee markets mountains lakes and "
        "friends they met last summer in a quiet village by the sea")


def run_cpu(server: Server, counts: dict[str, int], timeout: float,
            progress: Any) -> tuple[dict[str, float], dict[str, Counter[int]]]:
    ms: dict[str, float] = {}
    statuses: dict[str, Counter[int]] = {}
    with client_for(server.port, timeout) as client:
        for name, rec in cpu_cases(TEXT).items():
            n = counts[name]
            body = body_of(rec)
            headers = [tuple(h) for h in rec["headers"]]
            for _ in range(20):  # warm up
                client.request(rec["method"], rec["target"], headers=headers, content=body)
            task = progress.add_task(f"{server.name} cpu {name}", total=n)
            seen: Counter[int] = Counter()
            before = server.cpu()
            for _ in range(n):
                seen[client.request(rec["method"], rec["target"], headers=headers,
                                    content=body).status_code] += 1
                progress.advance(task)
            ms[name] = (server.cpu() - before) * 1000 / n
            statuses[name] = seen
            progress.remove_task(task)
    return ms, statuses


# --- report ----------------------------------------------------------------------------------

def rate(outcomes: dict[str, int], recs: list[dict[str, Any]]) -> float:
    if not recs:
        return float("nan")
    return sum(1 for r in recs if not 200 <= outcomes.get(r["id"], 0) < 300) / len(recs)


def report(results: list[Result], attacks: list[dict[str, Any]], benign: list[dict[str, Any]],
           cpu_counts: dict[str, int]) -> str:
    by_name = {r.name: r for r in results}
    names = [r.name for r in results]
    fams = sorted({r["family"] for r in attacks})
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row(f"**detection** ({len(attacks)} attacks)",
        [f"**{rate(by_name[n].outcomes, attacks):.1%}**" for n in names])
    row(f"**false positives** ({len(benign)} benign)",
        [f"**{rate(by_name[n].outcomes, benign):.1%}**" for n in names])
    row("attacks answered 403",
        [str(sum(1 for a in attacks if by_name[n].outcomes.get(a["id"]) == 403)) for n in names])
    row("no answer (attacks+benign)", [f"{sum(1 for v in by_name[n].outcomes.values() if v == 0)}"
                                       for n in names])
    for fam in fams:
        recs = [a for a in attacks if a["family"] == fam]
        row(f"{fam} ({len(recs)})", [f"{rate(by_name[n].outcomes, recs):.1%}" for n in names])
    places = sorted({a.get("placement", "?") for a in attacks})
    for pl in places:
        recs = [a for a in attacks if a.get("placement", "?") == pl]
        row(f"_in {pl}_ ({len(recs)})", [f"{rate(by_name[n].outcomes, recs):.1%}" for n in names])
    out = "\n".join(lines)

    if any(r.cpu_ms for r in results):
        cl = ["| CPU ms/request | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for case in cpu_counts:
            vals = []
            for n in names:
                v = by_name[n].cpu_ms.get(case)
                bad = {s: c for s, c in by_name[n].cpu_status.get(case, Counter()).items()
                       if s != 200}
                note = f" (non-200: {bad})" if bad else ""
                vals.append("-" if v is None else f"{v:.3f}{note}")
            cl.append(f"| {case} (N={cpu_counts[case]}) | " + " | ".join(vals) + " |")
        cl += ["", "| CPU added by the WAF, ms/request | PL1 | PL2 |", "|---|---:|---:|"]
        for case in cpu_counts:
            for side in ("modsecurity", "bastion"):
                off = by_name.get(f"{side}-off")
                if off is None or case not in off.cpu_ms:
                    continue
                vals = []
                for pl in (1, 2):
                    on = by_name.get(f"{side}-pl{pl}")
                    vals.append("-" if on is None or case not in on.cpu_ms
                                else f"{on.cpu_ms[case] - off.cpu_ms[case]:.3f}")
                cl.append(f"| {case}, {side} | " + " | ".join(vals) + " |")
        for case in cpu_counts:
            try:
                ratios = []
                for pl in (1, 2):
                    m = (by_name[f"modsecurity-pl{pl}"].cpu_ms[case]
                         - by_name["modsecurity-off"].cpu_ms[case])
                    b = (by_name[f"bastion-pl{pl}"].cpu_ms[case]
                         - by_name["bastion-off"].cpu_ms[case])
                    ratios.append(f"PL{pl} {m / b:.1f}x" if b > 0
                                  else f"PL{pl} n/a (Bastion {b:.3f})")
                cl.append(f"\nModSecurity added / Bastion added, {case}: " + ", ".join(ratios))
            except KeyError:
                pass
        out += "\n\n" + "\n".join(cl)
    return out


def inprocess_cpu(paranoia: list[int], counts: dict[str, int]) -> str:
    """CPU time of ``Waf.inspect`` alone, in this process, for the same three requests."""
    from bastion.edge.waf import HttpRequest, Waf, WafConfig

    lines = ["| Waf.inspect in-process, ms CPU/request | " + " | ".join(
        f"PL{pl}" for pl in paranoia) + " |", "|---|" + "---:|" * len(paranoia)]
    for name, rec in cpu_cases(TEXT).items():
        req = HttpRequest(method=rec["method"], target=rec["target"],
                          headers=[("host", "localhost"), *((k, v) for k, v in rec["headers"])],
                          body=body_of(rec) or b"")
        vals = []
        for pl in paranoia:
            waf = Waf(WafConfig(paranoia=pl))
            for _ in range(20):
                waf.inspect(req)
            n = counts[name] * 2
            t0 = time.process_time()
            for _ in range(n):
                v = waf.inspect(req)
            vals.append(f"{(time.process_time() - t0) * 1000 / n:.3f}"
                        + (" (blocked)" if v.blocked else ""))
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, action="append",
                    help=f"corpus dir(s) with attacks.jsonl [benign.jsonl]; default {CORPUS}")
    ap.add_argument("--only", choices=["modsecurity", "bastion"])
    ap.add_argument("--paranoia", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpu", type=int, nargs=3, default=[1000, 1000, 200],
                    metavar=("GET", "JSON2K", "FORM64K"), help="requests per CPU case")
    ap.add_argument("--no-cpu", action="store_true")
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--json", type=Path, help="write per-request outcomes here")
    args = ap.parse_args()
    from rich.progress import Progress

    attacks: list[dict[str, Any]] = []
    benign: list[dict[str, Any]] = []
    for d in args.corpus or [CORPUS]:
        attacks += load(d / "attacks.jsonl")
        if (d / "benign.jsonl").exists():
            benign += load(d / "benign.jsonl")
    if not benign:
        benign = load(CORPUS / "benign.jsonl")
    cpu_counts = dict(zip(["get_query", "json_2k", "form_64k"], args.cpu, strict=True))

    sides = [s for s in ("modsecurity", "bastion") if args.only in (None, s)]
    servers: list[Server] = []
    for side in sides:
        if side == "bastion":
            try:
                import importlib

                sys.path.insert(0, str(ROOT / "src"))
                importlib.import_module("bastion.edge.waf.middleware")
            except ImportError as exc:
                print(f"Bastion side skipped: bastion.edge.waf.middleware is not importable "
                      f"({exc})")
                continue
        servers.append(Server(f"{side}-off", side, 1, False))
        servers += [Server(f"{side}-pl{pl}", side, pl, True) for pl in args.paranoia]

    print(f"corpus: {len(attacks)} attacks, {len(benign)} benign; servers: "
          f"{', '.join(s.name for s in servers)}; Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs")
    results: list[Result] = []
    with Progress() as progress:
        for server in servers:
            res = Result(server.name)
            server.start()
            try:
                if not args.no_cpu:
                    res.cpu_ms, res.cpu_status = run_cpu(server, cpu_counts, args.timeout, progress)
                if not args.no_corpus:
                    res.outcomes = run_corpus(server, attacks + benign, args.timeout, progress)
            finally:
                server.stop()
            results.append(res)
            progress.console.print(f"{server.name}: done")
    print(report(results, attacks, benign, cpu_counts))
    if any(s.side == "bastion" for s in servers) and not args.no_cpu:
        print()
        print(inprocess_cpu(args.paranoia, cpu_counts))
    if args.json:
        args.json.write_text(json.dumps({r.name: {"outcomes": r.outcomes, "cpu_ms": r.cpu_ms}
                                         for r in results}))


if __name__ == "__main__":
    main()
