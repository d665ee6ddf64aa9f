"""The ``bastion`` command: scriptable with --json, safe on shared data, clear on errors."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from joserfc import jws

from tests.live import BASTION, start_live_server


def run(*args: str, data: Path, stdin: str | None = None, env: dict | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASTION, *args, "--data-dir", str(data)], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False, env=env)


def test_users_and_clients_round_trip(tmp_path):
    r = run("users", "create", "carol", "--password-stdin", "--role", "order:view", "--json",
            data=tmp_path, stdin="s3cret-passw0rd\n")
    assert r.returncode == 0, r.stderr
    user = json.loads(r.stdout)
    assert user["username"] == "carol" and user["roles"] == ["order:view"]
    assert "s3cret-passw0rd" not in r.stdout + r.stderr
    listed = json.loads(run("users", "list", "--json", data=tmp_path).stdout)
    assert [u["username"] for u in listed] == ["carol"]

    r = run("clients", "create", "--name", "app", "--redirect-uri", "https://app.example/cb",
            "--scope", "openid", "--json", data=tmp_path)
    assert r.returncode == 0, r.stderr
    client = json.loads(r.stdout)
    assert len(client["client_secret"]) >= 43  # 256 bits, base64url
    clients = run("clients", "list", "--json", data=tmp_path)
    assert client["client_secret"] not in clients.stdout
    assert json.loads(clients.stdout)[0]["client_id"] == client["client_id"]

    public = json.loads(run("clients", "create", "--name", "spa", "--public", "--redirect-uri",
                            "http://127.0.0.1/cb", "--json", data=tmp_path).stdout)
    assert "client_secret" not in public and public["token_endpoint_auth_method"] == "none"


@pytest.mark.parametrize("args, message", [
    (["users", "create", "bad name!", "--password-stdin"], "username"),
    (["clients", "create", "--name", "x", "--redirect-uri", "http://evil.example/cb"],
     "redirect URI"),
    (["clients", "create", "--name", "x", "--redirect-uri", "https://a.example/cb#frag"],
     "redirect URI"),
    (["clients", "create", "--name", "x", "--grant-type", "password"], "grant type"),
    (["clients", "create", "--name", "x", "--public", "--grant-type", "client_credentials"],
     "public client"),
], ids=["bad-username", "http-non-loopback-redirect", "fragment-redirect", "password-grant",
        "public-client-credentials"])
def test_refusals_are_clear(tmp_path, args, message):
    r = run(*args, data=tmp_path, stdin="pw-123456789\n")
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr


def test_serve_requires_tls_or_dev_on_loopback(tmp_path):
    r = run("serve", "--port", "0", data=tmp_path)
    assert r.returncode == 2 and "TLS" in r.stderr
    r = run("serve", "--dev", "--host", "0.0.0.0", "--port", "0", data=tmp_path)
    assert r.returncode == 2 and "loopback" in r.stderr


def test_invalid_settings_are_reported(tmp_path):
    env = {"BASTION_ACCESS_TOKEN_TTL": "five", "PATH": "/usr/bin:/bin"}
    r = run("users", "list", data=tmp_path, env=env)
    assert r.returncode == 2 and "access_token_ttl" in r.stderr and "Traceback" not in r.stderr


def _kid(token: str) -> str:
    return jws.extract_compact(token.encode()).protected["kid"]


def test_running_server_sees_cli_rotation_within_seconds(tmp_path):
    for server in start_live_server(tmp_path):
        client = server.add_client("svc", [], "--grant-type", "client_credentials",
                                   "--scope", "order:view")
        with server.http() as http:
            def token() -> str:
                r = http.post("/token", data={"grant_type": "client_credentials"},
                              auth=(client["client_id"], client["client_secret"]))
                assert r.status_code == 200, r.text
                return r.json()["access_token"]

            jwks_before = {k["kid"] for k in http.get("/jwks.json").json()["keys"]}
            first = token()
            rotated = server.cli("keys", "rotate")["active_kid"]
            assert rotated in jwks_before  # published before it signs
            deadline = time.monotonic() + 10
            while _kid(token()) != rotated:
                assert time.monotonic() < deadline, "rotation not seen within 10 s"
                time.sleep(0.2)
            jwks_after = {k["kid"] for k in http.get("/jwks.json").json()["keys"]}
            assert _kid(first) in jwks_after  # retired key still verifiable
            keys = server.cli("keys", "list")
            assert sorted(k["status"] for k in keys) == ["active", "next", "retired"]


def test_groups_cli(tmp_path):
    assert run("users", "create", "dave", "--password-stdin", data=tmp_path,
               stdin="pw-dave-123456\n").returncode == 0
    assert run("groups", "create", "buyers", "--role", "order:create", "--role", "order:view",
               data=tmp_path).returncode == 0
    assert run("groups", "add-member", "buyers", "dave", data=tmp_path).returncode == 0
    groups = json.loads(run("groups", "list", "--json", data=tmp_path).stdout)
    assert groups[0]["members"] == ["dave"] and "order:create" in groups[0]["roles"]
    bad = run("groups", "add-member", "buyers", "nobody", data=tmp_path)
    assert bad.returncode == 1 and "no such" in bad.stderr
