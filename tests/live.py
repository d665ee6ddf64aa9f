"""A real ``bastion serve`` in a subprocess, over real TLS, for interop and browser tests.

The fixture makes a throwaway CA and server certificate with ``cryptography``, starts the
server on a free loopback port with ``--tls-cert/--tls-key``, waits for ``/healthz``, and
registers users and clients with the real CLI (``--json``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BASTION = str(Path(sys.executable).parent / "bastion")
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost/127.0.0.1. Returns (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    ca_file: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, stdin: str | None = None) -> dict:
        out = subprocess.run([BASTION, *args, "--data-dir", str(self.data_dir), "--json"],
                             input=stdin, capture_output=True, text=True, env=self.env,
                             timeout=60, check=False)
        if out.returncode != 0:
            raise AssertionError(f"bastion {' '.join(args)} failed: {out.stderr}")
        return json.loads(out.stdout)

    def add_user(self, name: str, *roles: str) -> str:
        args = ["users", "create", name, "--password-stdin", "--email", f"{name}@example.com",
                "--full-name", name.title()]
        for r in roles:
            args += ["--role", r]
        self.cli(*args, stdin=PASSWORD + "\n")
        self.users[name] = PASSWORD
        return PASSWORD

    def add_client(self, name: str, redirect_uris: list[str], *extra: str) -> dict:
        args = ["clients", "create", "--name", name]
        for u in redirect_uris:
            args += ["--redirect-uri", u]
        return self.cli(*args, *extra)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=30)


def start_live_server(tmp: Path, *extra_args: str, env_over: dict[str, str] | None = None
                      ) -> Iterator[LiveServer]:
    ca, cert, key = make_tls(tmp / "tls")
    port = free_port()
    data = tmp / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(env_over or {})
    env["BASTION_ADMIN_PASSWORD"] = PASSWORD
    env["BASTION_KEY_REFRESH_INTERVAL"] = env.get("BASTION_KEY_REFRESH_INTERVAL", "0.5")
    url = f"https://localhost:{port}"
    log = tmp / "server.log"
    server = LiveServer(url, data, ca, env, log)
    if "--workers" not in extra_args:  # serve's default is one per core; tests/test_workers.py
        extra_args = ("--workers", "1", *extra_args)  # covers several (see its docstring)
    with log.open("wb") as fh:
        server.process = subprocess.Popen(
            [BASTION, "serve", "--data-dir", str(data), "--port", str(port),
             "--tls-cert", str(cert), "--tls-key", str(key), "--issuer", url, *extra_args],
            stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()}")
            try:
                if httpx.get(url + "/healthz", verify=server.ssl_context(),
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
