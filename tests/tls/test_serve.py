"""A real ``bastion serve``: TLS by default from the internal CA (the trust bundle hint, the
files, a restart keeps the certificate), mTLS required against the CA with a certificate
from ``bastion pki issue`` revoked by ``bastion pki revoke`` in another process, and file
certificates hot-reloaded on SIGHUP while a client keeps requesting."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.live import BASTION, PASSWORD, free_port
from tests.tls import certs
from tests.tls.harness import client_context, connect, get, request, serial_of


@contextmanager
def bastion_serve(tmp: Path, *args: str, env: dict[str, str] | None = None,
                  ca: Path | None = None, probe: bool = True,
                  ) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """``bastion serve`` on a free port; waits for /healthz (trusting ``ca``, default the
    internal CA's bundle in data_dir/tls/ca.pem), or without ``probe`` (mTLS required) for
    uvicorn to listen. Yields (port, log file, process)."""
    port = free_port()
    data = tmp / "data"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    environ.update({"BASTION_ADMIN_PASSWORD": PASSWORD, **(env or {})})
    log = tmp / f"server-{port}.log"
    bundle = ca or data / "tls" / "ca.pem"
    with log.open("wb") as fh:
        workers = () if "--workers" in args else ("--workers", "1")  # exact per-process
        process = subprocess.Popen([BASTION, "serve", "--data-dir", str(data), "--port",
                                    str(port), *workers, *args], stdout=fh, stderr=subprocess.STDOUT,
                                   env=environ)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()}")
            if "Uvicorn running on" in log.read_text() and not probe:
                break
            if bundle.is_file() and probe:
                try:
                    ctx = ssl.create_default_context(cafile=str(bundle))
                    if httpx.get(f"https://localhost:{port}/healthz", verify=ctx,
                                 timeout=2).status_code == 200:
                        break
                except (httpx.HTTPError, ssl.SSLError):
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()}")
            time.sleep(0.2)
        yield port, log, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def cli(tmp: Path, *args: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    r = subprocess.run([BASTION, *args, "--data-dir", str(tmp / "data")], capture_output=True,
                       text=True, env=environ, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_tls_by_default_from_the_internal_ca(tmp_path):
    tls = tmp_path / "data" / "tls"
    with bastion_serve(tmp_path) as (port, log, _):
        text = log.read_text()
        assert "bastion ca export" in text and str(tls / "ca.pem") in text
        assert f"issuer https://127.0.0.1:{port}" in text
        assert stat.S_IMODE((tls / "server.key").stat().st_mode) == 0o600
        exported = tmp_path / "exported.pem"
        cli(tmp_path, "ca", "export", "--out", str(exported))
        assert exported.read_text() == (tls / "ca.pem").read_text()
        for host in ("localhost", "127.0.0.1"):
            r = subprocess.run(["curl", "-sS", "--cacert", str(exported),
                                f"https://{host}:{port}/healthz"], capture_output=True,
                               text=True, timeout=30, check=False)
            assert r.returncode == 0 and '"status":"ok"' in r.stdout.replace(" ", ""), \
                r.stderr
        first = request(port, client_context(exported)).serial
    with bastion_serve(tmp_path) as (port, _, _):  # a restart keeps the certificate
        assert request(port, client_context(exported)).serial == first


def test_mtls_required_with_the_internal_ca_and_revocation_from_the_cli(tmp_path):
    env = {"BASTION_MTLS": "required", "BASTION_MTLS_REVOCATION_CACHE_TTL": "0.5"}
    prefix = tmp_path / "workload"
    with bastion_serve(tmp_path, env=env, probe=False) as (port, _, _):
        bundle = tmp_path / "data" / "tls" / "ca.pem"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(port, client_context(bundle), "/healthz")
        out = cli(tmp_path, "pki", "issue", "--profile", "client", "--spiffe-id",
                  "spiffe://bastion.internal/ns/shop/sa/api", "--out", str(prefix), "--json")
        serial = json.loads(out)["serial"]
        cert, key = Path(f"{prefix}.crt"), Path(f"{prefix}.key")
        r = subprocess.run(["curl", "-sS", "--cacert", str(bundle), "--cert", str(cert),
                            "--key", str(key), f"https://localhost:{port}/healthz"],
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 0 and "ok" in r.stdout, r.stderr
        ctx = client_context(bundle, cert=cert, key=key)
        with connect(port, ctx) as kept:
            assert get(kept, "/healthz")[0] == 200
            cli(tmp_path, "pki", "revoke", serial, "--reason", "keyCompromise")
            revoked_at = time.monotonic()
            while (status := get(kept, "/healthz")[0]) == 200:
                assert time.monotonic() - revoked_at < 10, "revocation not seen in 10 s"
                time.sleep(0.2)
            assert status == 401
        assert request(port, ctx, "/healthz").status == 401  # and on a new connection


def test_file_certificates_reload_on_sighup_while_a_client_keeps_requesting(tmp_path):
    root = certs.authority("Test root")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(root.cert_pem())
    first = certs.server(root)
    cert, key = first.write(tmp_path / "tls", "server")
    env = {"BASTION_TLS_RELOAD_INTERVAL": "0"}  # SIGHUP only
    with bastion_serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), env=env,
                       ca=ca) as (port, log, process):
        ctx = client_context(ca)
        stop = threading.Event()
        failures: list[str] = []
        done = [0]

        def loop() -> None:
            try:
                with connect(port, ctx) as sock:
                    while not stop.is_set():
                        if get(sock, "/healthz")[0] != 200:
                            failures.append("status")
                        done[0] += 1
            except Exception as exc:
                failures.append(repr(exc))

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            second = certs.server(root)
            second.write(tmp_path / "tls", "server")
            time.sleep(0.5)
            assert request(port, ctx, "/healthz").serial == first.serial  # not polled
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while request(port, ctx, "/healthz").serial != second.serial:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(20)
        assert failures == [] and done[0] > 10
        assert process.poll() is None  # SIGHUP does not stop the server
        assert "TLS certificate reloaded" in log.read_text()
        with connect(port, ctx) as sock:
            assert serial_of(sock) == second.serial
