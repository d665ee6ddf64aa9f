"""The ``bastion`` command: scriptable with --json, safe on shared data, clear on errors."""

from __future__ import annotations

import json
import os
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
    # without --dev TLS is the default (tests/tls/test_serve.py); unusable files are refused
    missing = str(tmp_path / "missing.pem")
    r = run("serve", "--port", "0", "--tls-cert", missing, "--tls-key", missing, data=tmp_path)
    assert r.returncode == 2 and "TLS" in r.stderr and "missing.pem" in r.stderr
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


# --- new users: password rules, roles that exist, no clash with clients ----------------------

@pytest.mark.parametrize("password,fragment", [
    pytest.param("abc", "at least 12 characters", id="3-characters"),
    pytest.param("qwerty123456", "breached", id="breached"),
    pytest.param("QWERTY123456", "breached", id="breached-upper-case"),
    pytest.param("erin-erin-erin", "username", id="username"),
])
def test_users_create_refuses_weak_password(tmp_path, password, fragment):
    r = run("users", "create", "erin-erin-erin", "--password-stdin", data=tmp_path,
            stdin=password + "\n")
    assert r.returncode == 1 and fragment in r.stderr, r.stderr
    assert password not in r.stderr + r.stdout
    assert json.loads(run("users", "list", "--json", data=tmp_path).stdout) == []


def test_users_create_refuses_role_that_does_not_exist(tmp_path):
    r = run("users", "create", "erin", "--password-stdin", "--role", "order:veiw",
            data=tmp_path, stdin="a fine passphrase\n")
    assert r.returncode == 1 and "no such role: order:veiw" in r.stderr
    r = run("groups", "create", "buyers", "--role", "nope", data=tmp_path)
    assert r.returncode == 1 and "no such role: nope" in r.stderr
    r = run("clients", "create", "--name", "svc", "--grant-type", "client_credentials",
            "--role", "nope", data=tmp_path)
    assert r.returncode == 1 and "no such role: nope" in r.stderr


def test_user_and_client_ids_never_collide(tmp_path):
    """Item 7: a client_id equal to a user's id or name, or a username equal to a client id,
    is refused both ways."""
    user = json.loads(run("users", "create", "erin", "--password-stdin", "--json",
                          data=tmp_path, stdin="a fine passphrase\n").stdout)
    for taken in (user["id"], "erin"):
        r = run("clients", "create", "--name", "x", "--grant-type", "client_credentials",
                "--client-id", taken, data=tmp_path)
        assert r.returncode == 1 and "names a user" in r.stderr, r.stderr
    assert run("clients", "create", "--name", "x", "--grant-type", "client_credentials",
               "--client-id", "svc", data=tmp_path).returncode == 0
    r = run("users", "create", "svc", "--password-stdin", data=tmp_path,
            stdin="a fine passphrase\n")
    assert r.returncode == 1 and "client id" in r.stderr


# --- every change commits with its audit record ----------------------------------------------

CHANGES = {
    "users-create": (["users", "create", "frank", "--password-stdin"], "a fine passphrase\n",
                     "SELECT count(*) FROM users WHERE username = 'frank'"),
    "users-totp": (["users", "totp", "erin"], None,
                   "SELECT count(*) FROM users WHERE totp_secret IS NOT NULL"),
    "groups-create": (["groups", "create", "buyers", "--role", "order:view"], None,
                      "SELECT count(*) FROM groups"),
    "groups-add-member": (["groups", "add-member", "staff", "erin"], None,
                          "SELECT count(*) FROM group_members"),
    "clients-create": (["clients", "create", "--name", "svc", "--grant-type",
                        "client_credentials"], None, "SELECT count(*) FROM clients"),
    "keys-rotate": (["keys", "rotate"], None,
                    "SELECT count(*) FROM signing_keys WHERE status = 'retired'"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_cli_change_is_not_committed_without_its_audit_record(tmp_path, change):
    """Item 10: the change and its record commit in one transaction; with the trail
    unwritable, nothing changes (before, the change committed and the record was lost)."""
    import sqlite3

    args, stdin, count_sql = CHANGES[change]
    assert run("users", "create", "erin", "--password-stdin", data=tmp_path,
               stdin="a fine passphrase\n").returncode == 0
    assert run("groups", "create", "staff", data=tmp_path).returncode == 0
    db = sqlite3.connect(tmp_path / "bastion.db")
    try:
        before = db.execute(count_sql).fetchone()[0]
        db.execute("ALTER TABLE audit_events RENAME TO audit_events_away")
        db.commit()
        r = run(*args, data=tmp_path, stdin=stdin)
        assert r.returncode == 1 and "audit trail is unavailable" in r.stderr, r.stderr
        assert db.execute(count_sql).fetchone()[0] == before
        db.execute("ALTER TABLE audit_events_away RENAME TO audit_events")
        db.commit()
        r = run(*args, data=tmp_path, stdin=stdin)
        assert r.returncode == 0, r.stderr
        assert db.execute(count_sql).fetchone()[0] == before + 1
    finally:
        db.close()


# --- which data dir ----------------------------------------------------------------------------

def run_in(cwd: Path, *args: str, stdin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    """``bastion ARGS`` in ``cwd`` with no --data-dir and no BASTION_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return subprocess.run([BASTION, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False, env=env, cwd=cwd)


@pytest.mark.parametrize("args", [
    pytest.param(["users", "list"], id="users-list"),
    pytest.param(["keys", "rotate"], id="keys-rotate"),
    pytest.param(["iam", "roles", "list"], id="iam-roles-list"),
    pytest.param(["audit", "verify"], id="audit-verify"),
])
def test_read_commands_refuse_to_create_a_data_dir(tmp_path, args):
    """Item 14: a read command run where there is no state says so, and creates nothing."""
    r = run_in(tmp_path, *args)
    assert r.returncode == 2 and "no Bastion data in" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / "elsewhere"
    r = run(*args, data=missing)
    assert r.returncode == 2 and str(missing) in r.stderr and not missing.exists()


def test_default_data_dir_is_found_from_a_subdirectory(tmp_path):
    """Item 14: without --data-dir every command uses the nearest ./bastion-data holding
    state, as ``serve`` started from the project does; not a new one per directory."""
    r = run_in(tmp_path, "users", "create", "erin", "--password-stdin",
               stdin="a fine passphrase\n")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bastion-data" / "kek.key").is_file()
    deeper = tmp_path / "src" / "deeper"
    deeper.mkdir(parents=True)
    listed = run_in(deeper, "users", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [u["username"] for u in json.loads(listed.stdout)] == ["erin"]
    assert not (deeper / "bastion-data").exists()


# --- help -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["serve"], ["users", "create"], ["clients", "create"],
                                  ["iam", "boundary"], ["audit", "verify"]])
def test_help_shows_flags_without_a_value_type(args):
    r = subprocess.run([BASTION, *args, "--help"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "<bool>" not in r.stdout and "--no-" not in r.stdout, r.stdout
    assert "--help " in r.stdout
