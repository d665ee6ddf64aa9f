#!/usr/bin/env python3
"""PKI benchmarks, in one run (issue 12):

(a) ACME: server time per issuance (new order → certificate downloaded, http-01 validated for
    real) for Bastion's ACME server and for Debian's ``pebble``, with one client that never
    sleeps between polls (RFC 8555 over httpx + joserfc). Pebble runs with
    PEBBLE_VA_NOSLEEP=1 (no random validation delay), PEBBLE_WFE_NONCEREJECT=0 (no
    deliberate badNonce) and PEBBLE_AUTHZREUSE=0 (a fresh authorization per order, as
    Bastion gives); its names resolve through ``pebble-challtestsrv``'s DNS, Bastion's through
    ``BASTION_ACME_RESOLVE``. Also each server's CPU per issuance (/proc/<pid>/stat).
(b) TLS and mutual-TLS handshakes per second (``openssl s_time -new``, full handshakes, TLS
    1.3) against ``bastion serve`` and nginx (Debian ``nginx-light``, one worker, as Bastion
    serves from one process) on the same certificate and key; for mTLS both ask for a
    client certificate (``optional``) and the client presents one from Bastion's CA.
(c) The cost of TLS on the token endpoint: client_credentials with wrk over HTTPS and over
    plain HTTP (``--dev``), same server settings.

    apt-get install pebble nginx-light wrk     # once
    .venv/bin/python bench/pki.py [--issuances 30] [--seconds 5]

Everything goes to a temp dir (removed at the end).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.edge import parse_wrk  # noqa: E402
from tests.conftest import raised_rate_limits  # noqa: E402
from tests.live import BASTION, free_port, make_tls, start_live_server  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
REGISTRY = JWSRegistry(strict_check_header=False, algorithms=["ES256"])
NAME = "bench.test"
LUA = Path(__file__).parent / "lua" / "client_credentials.lua"


def cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its live descendants (``bastion serve`` may run worker processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / TICK
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(cpu_seconds(int(c)) for c in children)
    return total


# --- http-01 responder ----------------------------------------------------------------------
class Responder:
    """Key authorizations at /.well-known/acme-challenge/<token>, on any number of ports."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.servers: list[ThreadingHTTPServer] = []

    def listen(self, port: int) -> None:
        tokens = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                token = self.path.rsplit("/", 1)[-1]
                body = tokens.get(token, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()


# --- a client that never sleeps ----------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Acme:
    def __init__(self, directory: str, verify: Any, responder: Responder) -> None:
        self.http = httpx.Client(verify=verify, timeout=30)
        self.dir = self.http.get(directory).json()
        self.key = ECKey.generate_key("P-256")
        self.kid: str | None = None
        self.nonce: str | None = None
        self.responder = responder
        jwk = self.key.as_dict(private=False)
        canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")},
                           separators=(",", ":"), sort_keys=True)
        self.thumb = b64(hashlib.sha256(canon.encode()).digest())

    def post(self, url: str, payload: Any) -> httpx.Response:
        for _ in range(5):
            if self.nonce is None:
                self.nonce = self.http.head(self.dir["newNonce"]).headers["Replay-Nonce"]
            protected: dict[str, Any] = {"alg": "ES256", "nonce": self.nonce, "url": url}
            if self.kid:
                protected["kid"] = self.kid
            else:
                protected["jwk"] = self.key.as_dict(private=False)
            body = b"" if payload is None else json.dumps(payload).encode()
            compact = jws.serialize_compact(protected, body, self.key, registry=REGISTRY)
            h, p, s = compact.split(".")
            r = self.http.post(url, json={"protected": h, "payload": p, "signature": s},
                               headers={"Content-Type": "application/jose+json"})
            self.nonce = r.headers.get("Replay-Nonce")
            if r.status_code == 400 and "badNonce" in r.text:
                continue
            return r
        raise SystemExit(f"{url}: badNonce five times")

    def account(self) -> None:
        r = self.post(self.dir["newAccount"], {"termsOfServiceAgreed": True,
                                               "contact": ["mailto:bench@example.com"]})
        assert r.status_code in (200, 201), r.text
        self.kid = r.headers["Location"]

    def issue(self, name: str) -> float:
        """One certificate for ``name``: seconds from newOrder to the downloaded chain."""
        csr_key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
               .sign(csr_key, hashes.SHA256()))
        t0 = time.perf_counter()
        r = self.post(self.dir["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
        assert r.status_code == 201, r.text
        order_url, order = r.headers["Location"], r.json()
        for authz_url in order["authorizations"]:
            authz = self.post(authz_url, None).json()
            if authz["status"] == "valid":
                continue
            chall = next(c for c in authz["challenges"] if c["type"] == "http-01")
            self.responder.tokens[chall["token"]] = f"{chall['token']}.{self.thumb}"
            self.post(chall["url"], {})
            while (found := self.post(authz_url, None).json())["status"] in (
                    "pending", "processing"):
                pass
            assert found["status"] == "valid", found
        r = self.post(order["finalize"], {"csr": b64(csr.public_bytes(
            serialization.Encoding.DER))})
        assert r.status_code == 200, r.text
        while (order := self.post(order_url, None).json())["status"] in ("processing",
                                                                       "ready", "pending"):
            pass
        assert order["status"] == "valid", order
        chain = self.post(order["certificate"], None)
        assert chain.status_code == 200 and b"BEGIN CERTIFICATE" in chain.content
        return time.perf_counter() - t0


def summary(times: list[float], cpu: float) -> dict[str, float]:
    times = sorted(times)
    return {"n": len(times), "median_ms": statistics.median(times) * 1000,
            "p90_ms": times[int(len(times) * 0.9) - 1] * 1000,
            "cpu_ms_per_issuance": cpu / len(times) * 1000}


@contextmanager
def process(args: list[str], env: dict[str, str] | None, log: Path) -> Iterator[Any]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_port(port: int, proc: Any, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"port {port} did not open: {log.read_text()[-2000:]}")


def bench_acme(tmp: Path, n: int) -> dict[str, Any]:
    responder = Responder()
    h_bastion, h_pebble = free_port(), free_port()
    responder.listen(h_bastion)
    responder.listen(h_pebble)
    out: dict[str, Any] = {}
    rules = json.dumps([asdict(r) for r in raised_rate_limits(1000)])
    # one process, as the earlier figures (bench/RESULTS.md); polls wait for a validation only
    # in the worker that runs it, and a client's keep-alive connection stays on one worker
    for live in start_live_server(tmp / "bastion", "--workers", "1", env_over={
            "BASTION_ACME_HTTP01_PORT": str(h_bastion),
            "BASTION_ACME_RESOLVE": f"{NAME}=127.0.0.1",
            "BASTION_RATE_LIMIT_RULES": rules}):
        client = Acme(live.url + "/acme/directory", live.ssl_context(), responder)
        client.account()
        client.issue(NAME)  # warm up
        pid = live.process.pid  # type: ignore[union-attr]
        c0 = cpu_seconds(pid)
        times = [client.issue(NAME) for _ in range(n)]
        out["bastion"] = summary(times, cpu_seconds(pid) - c0)
    # pebble, with its DNS from pebble-challtestsrv
    ca, cert, key = make_tls(tmp / "pebble-tls")
    dns, api, mgmt = free_port(), free_port(), free_port()
    config = tmp / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{api}", "managementListenAddress": f"127.0.0.1:{mgmt}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": h_pebble,
        "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
           "PEBBLE_AUTHZREUSE": "0"}
    with process(["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                  "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "",
                  "-tlsalpn01", "", "-management", f"127.0.0.1:{free_port()}"],
                 None, tmp / "challtestsrv.log"), \
            process(["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
                    env, tmp / "pebble.log") as peb:
        wait_port(api, peb, tmp / "pebble.log")
        import ssl

        client = Acme(f"https://127.0.0.1:{api}/dir", ssl.create_default_context(
            cafile=str(ca)), responder)
        client.account()
        client.issue(NAME)
        c0 = cpu_seconds(peb.pid)
        times = [client.issue(NAME) for _ in range(n)]
        out["pebble"] = summary(times, cpu_seconds(peb.pid) - c0)
    responder.close()
    out["ratio_median_bastion_over_pebble"] = (out["bastion"]["median_ms"]
                                               / out["pebble"]["median_ms"])
    return out


# --- (b) handshakes ------------------------------------------------------------------------
def s_time(port: int, seconds: int, cert: Path | None = None,
           key: Path | None = None) -> float:
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
            str(seconds)]
    if cert is not None and key is not None:
        args += ["-cert", str(cert), "-key", str(key)]
    text = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    for line in text.splitlines():
        if "connections/user sec" in line:
            # "N connections in T real seconds" is the honest rate for a busy client
            pass
        if "connections in" in line and "real seconds" in line:
            parts = line.split()
            return int(parts[0]) / float(parts[3])
    raise SystemExit(f"s_time said: {text[-500:]}")


NGINX_CONF = """worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    {mtls}
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def nginx(tmp: Path, port: int, cert: Path, key: Path, mtls_ca: Path | None) -> Any:
    mtls = f"ssl_client_certificate {mtls_ca}; ssl_verify_client optional;" if mtls_ca else ""
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, cert=cert, key=key, mtls=mtls))
    return process(["nginx", "-c", str(conf), "-g", "daemon off;"], None,
                   tmp / f"nginx-{port}.log")


def bench_handshakes(tmp: Path, seconds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("tls", "mtls"):
        # "optional" on both sides: the server still asks for and verifies the certificate
        # the client presents (the handshake measured), and the readiness probe needs none
        env = {"BASTION_MTLS": "optional"} if mode == "mtls" else {}
        for live in start_live_server(tmp / f"hs-{mode}", env_over=env):
            cert, key = tmp / f"hs-{mode}" / "tls" / "server.crt", \
                tmp / f"hs-{mode}" / "tls" / "server.key"
            client_cert = client_key = bundle = None
            if mode == "mtls":
                work = tmp / f"client-{mode}"
                work.mkdir()
                subprocess.run([BASTION, "pki", "issue", "--profile", "client", "bench.internal",
                                "--out", "client", "--data-dir", str(live.data_dir)], cwd=work,
                               env=live.env, check=True, capture_output=True)
                client_cert, client_key = work / "client.crt", work / "client.key"
                bundle = work / "bundle.pem"
                bundle.write_text(subprocess.run(
                    [BASTION, "ca", "export", "--data-dir", str(live.data_dir)], env=live.env,
                    check=True, capture_output=True, text=True).stdout)
            port = int(live.url.rsplit(":", 1)[1])
            bastion_rate = s_time(port, seconds, client_cert, client_key)
            nport = free_port()
            with nginx(tmp, nport, cert, key, bundle) as proc:
                wait_port(nport, proc, tmp / f"nginx-{nport}.log")
                nginx_rate = s_time(nport, seconds, client_cert, client_key)
            out[mode] = {"bastion_per_s": bastion_rate, "nginx_per_s": nginx_rate,
                         "ratio": bastion_rate / nginx_rate}
    return out


# --- (c) TLS on the token endpoint ---------------------------------------------------------
def bench_token(tmp: Path, seconds: int) -> dict[str, Any]:
    """The same server settings and client, once over HTTPS (certificate files) and once
    over plain HTTP (``--dev``): wrk, 8 connections, client_credentials."""
    rules = json.dumps([asdict(r) for r in raised_rate_limits(1000)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update({"BASTION_ADMIN_PASSWORD": "correct horse battery staple",
                "BASTION_RATE_LIMIT_RULES": rules})
    _ca, cert, key = make_tls(tmp / "tok-tls")
    out: dict[str, Any] = {}
    for scheme in ("https", "http"):
        data, port = tmp / f"tok-{scheme}", free_port()
        made = json.loads(subprocess.run(
            [BASTION, "clients", "create", "--name", "bench", "--grant-type",
             "client_credentials", "--scope", "order:view", "--role", "order:view",
             "--data-dir", str(data), "--json"], env=env, check=True, capture_output=True,
            text=True).stdout)
        tls = ["--tls-cert", str(cert), "--tls-key", str(key),
               "--issuer", f"https://localhost:{port}"] if scheme == "https" else ["--dev"]
        with process([BASTION, "serve", "--port", str(port), "--data-dir", str(data),
                      "--log-level", "warning", *tls], env, tmp / f"tok-{scheme}.log") as proc:
            wait_port(port, proc, tmp / f"tok-{scheme}.log")
            time.sleep(1)
            text = subprocess.run(["wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s",
                                   "--latency", "-s", str(LUA),
                                   f"{scheme}://127.0.0.1:{port}/token", "--",
                                   made["client_id"], made["client_secret"], "order:view"],
                                  capture_output=True, text=True, check=True).stdout
            out[scheme] = parse_wrk(text)
    out["https_over_http"] = out["https"]["rps"] / out["http"]["rps"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issuances", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", choices=("acme", "handshakes", "token"))
    args = parser.parse_args()
    for tool in ("pebble", "pebble-challtestsrv", "nginx", "wrk", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install pebble nginx-light wrk")
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-pki-"))
    try:
        report: dict[str, Any] = {}
        if args.only in (None, "acme"):
            report["acme"] = bench_acme(tmp, args.issuances)
            print(json.dumps({"acme": report["acme"]}, indent=2), flush=True)
        if args.only in (None, "handshakes"):
            report["handshakes"] = bench_handshakes(tmp, args.seconds)
            print(json.dumps({"handshakes": report["handshakes"]}, indent=2), flush=True)
        if args.only in (None, "token"):
            report["token"] = bench_token(tmp, args.seconds)
            print(json.dumps({"token": report["token"]}, indent=2), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
