"""Interop: Debian's certbot and lego against a real ``bastion serve`` over TLS. certbot
answers http-01 from its own standalone server on a free port (``BASTION_ACME_HTTP01_PORT``),
lego tls-alpn-01 on another (``BASTION_ACME_TLS_ALPN01_PORT``); the validator finds app.test
at 127.0.0.1 (``BASTION_ACME_RESOLVE``). Certificates must chain to the CA's trust bundle and
name app.test; renewal and revocation go through the clients too, and with
``acme_eab_required`` certbot binds its account with --eab-kid/--eab-hmac-key."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.live import LiveServer, free_port, start_live_server

CERTBOT = shutil.which("certbot") or "/usr/bin/certbot"
LEGO = shutil.which("lego") or "/usr/bin/lego"
NAME = "app.test"


class CertbotFailed(AssertionError):
    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output  # certbot's own stdout and stderr


class Certbot:
    def __init__(self, server: LiveServer, tmp: Path, http_port: int) -> None:
        self.server, self.tmp, self.http_port = server, tmp, http_port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        self.env["REQUESTS_CA_BUNDLE"] = str(server.ca_file)

    def run(self, *args: str) -> str:
        t = self.tmp
        out = subprocess.run(
            [CERTBOT, *args, "--non-interactive", "--server",
             f"{self.server.url}/acme/directory", "--config-dir", str(t / "config"),
             "--work-dir", str(t / "work"), "--logs-dir", str(t / "logs")],
            capture_output=True, text=True, env=self.env, timeout=120, check=False)
        if out.returncode != 0:
            log = (t / "logs" / "letsencrypt.log")
            raise CertbotFailed(f"certbot {args[0]} failed: {out.stdout}\n{out.stderr}\n"
                                f"{log.read_text()[-4000:] if log.exists() else ''}\n"
                                f"server: {self.server.log.read_text()[-4000:]}",
                                out.stdout + out.stderr)
        return out.stdout + out.stderr

    def certonly(self, *extra: str) -> None:
        self.run("certonly", "--standalone", "--http-01-port", str(self.http_port),
                 "-d", NAME, "--agree-tos", "-m", "a@b.test", *extra)

    @property
    def live(self) -> Path:
        return self.tmp / "config" / "live" / NAME


def server_for(tmp: Path, **env: str) -> Iterator[tuple[LiveServer, int]]:
    """A server, and the port its http-01 validations go to (the client listens there)."""
    port = free_port()
    yield from ((s, port) for s in start_live_server(tmp, env_over={
        "BASTION_ACME_HTTP01_PORT": str(port),
        "BASTION_ACME_RESOLVE": f"{NAME}=127.0.0.1", **env}))


def verify(server: LiveServer, fullchain: Path) -> x509.Certificate:
    """The leaf of ``fullchain`` as a server certificate for app.test under the CA's root
    (GET /pki/ca.crt), with exactly that SAN."""
    with server.http() as http:
        roots = x509.load_pem_x509_certificates(http.get("/pki/ca.crt").content)
    chain = x509.load_pem_x509_certificates(fullchain.read_bytes())
    verifier = PolicyBuilder().store(Store(roots)).time(dt.datetime.now(dt.UTC)) \
        .build_server_verifier(x509.DNSName(NAME))
    verifier.verify(chain[0], chain[1:])
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [NAME]
    return chain[0]


def revoked_on_crl(server: LiveServer, serial: int) -> x509.ReasonFlags | None:
    """The reason ``serial`` is on the CA's CRL for (unspecified: no reason extension);
    None when it is not on it."""
    with server.http() as http:
        crl = x509.load_der_x509_crl(http.get("/pki/crl").content)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return None
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified


ALPN_PORT = free_port()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int]]:
    yield from server_for(tmp_path_factory.mktemp("acme-live"),
                          BASTION_ACME_TLS_ALPN01_PORT=str(ALPN_PORT))


@pytest.fixture(scope="module")
def live_eab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int]]:
    yield from server_for(tmp_path_factory.mktemp("acme-eab"),
                          BASTION_ACME_EAB_REQUIRED="true")


def test_certbot_certonly_renew_revoke(live: tuple[LiveServer, int], tmp_path: Path) -> None:
    server, port = live
    bot = Certbot(server, tmp_path, port)
    bot.certonly()
    first = verify(server, bot.live / "fullchain.pem")
    bot.run("renew", "--force-renewal", "--no-random-sleep-on-renew")
    renewed = verify(server, bot.live / "fullchain.pem")
    assert renewed.serial_number != first.serial_number
    assert revoked_on_crl(server, renewed.serial_number) is None
    bot.run("revoke", "--cert-path", str(bot.live / "cert.pem"), "--reason", "superseded",
            "--no-delete-after-revoke")
    assert revoked_on_crl(server, renewed.serial_number) is x509.ReasonFlags.superseded
    assert revoked_on_crl(server, first.serial_number) is None


def test_certbot_with_external_account_binding(live_eab: tuple[LiveServer, int],
                                               tmp_path: Path) -> None:
    server, port = live_eab
    with server.http() as http:
        meta = http.get("/acme/directory").json()["meta"]
    assert meta["externalAccountRequired"] is True
    bot = Certbot(server, tmp_path / "without", port)
    with pytest.raises(CertbotFailed) as refused:
        bot.certonly()
    assert "externalAccountRequired" in refused.value.output or \
        "external account" in refused.value.output.lower()
    key = server.cli("acme", "eab", "create")
    bot = Certbot(server, tmp_path / "with", port)
    bot.certonly("--eab-kid", key["kid"], "--eab-hmac-key", key["hmac_key"])
    verify(server, bot.live / "fullchain.pem")
    # the key is spent: a second account cannot bind with it
    again = Certbot(server, tmp_path / "again", port)
    with pytest.raises(CertbotFailed) as spent:
        again.certonly("--eab-kid", key["kid"], "--eab-hmac-key", key["hmac_key"])
    assert "has been used" in spent.value.output, spent.value.output


def test_directory_over_tls_needs_no_account(live: tuple[LiveServer, int]) -> None:
    server, _ = live
    with server.http() as http:
        d = http.get("/acme/directory").json()
        assert d["newAccount"] == server.url + "/acme/new-account"
        r = http.post("/acme/new-order", content=b"{}",
                      headers={"Content-Type": "application/jose+json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert isinstance(r.headers.get("Replay-Nonce"), str)



def test_lego_tls_alpn01_renew_revoke(live: tuple[LiveServer, int], tmp_path: Path) -> None:
    server, _ = live
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "LEGO_"))}
    env["LEGO_CA_CERTIFICATES"] = str(server.ca_file)

    def lego(*args: str) -> None:
        out = subprocess.run(
            [LEGO, "--server", f"{server.url}/acme/directory", "--email", "a@b.test",
             "--accept-tos", "--domains", NAME, "--tls", "--tls.port", f":{ALPN_PORT}",
             "--path", str(tmp_path), *args],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{server.log.read_text()}"

    lego("run")
    crt = tmp_path / "certificates" / f"{NAME}.crt"  # leaf and chain
    first = verify(server, crt)
    lego("renew", "--days", "90", "--no-random-sleep")
    renewed = verify(server, crt)
    assert renewed.serial_number != first.serial_number
    lego("revoke", "--reason", "4")  # superseded
    assert revoked_on_crl(server, renewed.serial_number) is x509.ReasonFlags.superseded
