"""RFC 8705 over real mutual TLS: a real `bastion serve` with BASTION_MTLS=optional, a
workload certificate from `bastion pki issue`, httpx and curl as the clients."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import BASTION, LiveServer, start_live_server

SPIFFE = "spiffe://bastion.internal/ns/demo/sa/reporting"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from start_live_server(tmp_path_factory.mktemp("rfc8705"),
                                 env_over={"BASTION_MTLS": "optional"})


@pytest.fixture(scope="module")
def workload(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("wl")
    subprocess.run([BASTION, "pki", "issue", "--profile", "workload", "--spiffe-id", SPIFFE,
                    "--out", "reporting", "--data-dir", str(live.data_dir)], cwd=tmp,
                   env=live.env, check=True, capture_output=True, timeout=60)
    return tmp / "reporting.crt", tmp / "reporting.key"


@pytest.fixture(scope="module")
def client_id(live: LiveServer) -> str:
    made = live.cli("clients", "create", "--name", "reporting", "--grant-type",
                    "client_credentials", "--scope", "order:view", "--role", "order:view",
                    "--tls-client-auth", f"san_uri={SPIFFE}")
    assert made["token_endpoint_auth_method"] == "tls_client_auth"
    assert "client_secret" not in made
    return str(made["client_id"])


def cnf(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["cnf"]


def test_mtls_client_gets_a_bound_token_usable_only_over_its_certificate(
        live: LiveServer, workload: tuple[Path, Path], client_id: str):
    crt, key = workload
    ctx = live.ssl_context()
    ctx.load_cert_chain(str(crt), str(key))
    with httpx.Client(base_url=live.url, verify=ctx, timeout=30) as mtls:
        r = mtls.post("/token", data={"grant_type": "client_credentials",
                                      "scope": "order:view", "client_id": client_id})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert "x5t#S256" in cnf(token)
        assert mtls.get("/orders", headers={"Authorization": f"Bearer {token}"}
                        ).status_code == 200
    with live.http() as plain:
        stolen = plain.get("/orders", headers={"Authorization": f"Bearer {token}"})
        assert stolen.status_code == 401
        assert 'error="invalid_token"' in stolen.headers["www-authenticate"]
        no_cert = plain.post("/token", data={"grant_type": "client_credentials",
                                             "client_id": client_id})
        assert no_cert.status_code == 401 and no_cert.json()["error"] == "invalid_client"
    meta = httpx.get(live.url + "/.well-known/oauth-authorization-server",
                     verify=live.ssl_context()).json()
    assert "tls_client_auth" in meta["token_endpoint_auth_methods_supported"]


def test_curl_with_client_certificate(live: LiveServer, workload: tuple[Path, Path],
                                      client_id: str):
    crt, key = workload
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(live.ca_file), "--cert", str(crt), "--key", str(key),
         "-d", "grant_type=client_credentials", "-d", f"client_id={client_id}",
         live.url + "/token"], capture_output=True, text=True, timeout=60, check=True)
    token = json.loads(out.stdout)["access_token"]
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
         str(live.ca_file), "--cert", str(crt), "--key", str(key), "-H",
         f"Authorization: Bearer {token}", live.url + "/orders"],
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "200"
