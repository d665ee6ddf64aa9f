"""``bastion kms``: the real command against a data dir, --json on each command, AWS error
names on failures, nothing secret printed besides what was asked for."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.test_cli import run


def ok(*args: str, data: Path, stdin: str | None = None) -> dict:
    r = run("kms", *args, "--json", data=data, stdin=stdin)
    assert r.returncode == 0, r.stderr
    out: dict = json.loads(r.stdout)
    return out


def test_key_lifecycle_through_the_cli(tmp_path: Path):
    created = ok("create-key", "--description", "cli key", "--alias", "cli", data=tmp_path)
    key = created["KeyMetadata"]["KeyId"]
    assert created["KeyMetadata"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    listed = ok("list-keys", data=tmp_path)
    assert [(k["KeyId"], k["Aliases"]) for k in listed] == [(key, ["alias/cli"])]

    enc = ok("encrypt", "alias/cli", "hello cli", "--context", "app=test", data=tmp_path)
    blob = enc["CiphertextBlob"]
    r = run("kms", "decrypt", blob, "--context", "app=test", data=tmp_path)
    assert r.returncode == 0 and r.stdout == "hello cli", r.stderr
    dec = ok("decrypt", blob, "--context", "app=test", "--key", key, data=tmp_path)
    assert base64.b64decode(dec["Plaintext"]) == b"hello cli"
    r = run("kms", "decrypt", blob, data=tmp_path)  # the context is missing
    assert r.returncode == 1 and "InvalidCiphertextException" in r.stderr
    assert "hello" not in r.stderr + r.stdout

    ok("rotate", key, data=tmp_path)
    ok("rotate", key, "--enable", "90", data=tmp_path)
    described = ok("describe", key, data=tmp_path)
    assert described["Rotation"]["KeyRotationEnabled"] is True
    assert [x["RotationType"] for x in described["Rotations"]] == ["ON_DEMAND"]
    text = run("kms", "describe", key, data=tmp_path).stdout
    assert "Versions: 2" in text and "every 90 days" in text
    r = run("kms", "decrypt", blob, "--context", "app=test", data=tmp_path)
    assert r.stdout == "hello cli"  # version 1 still decrypts

    ok("disable", key, data=tmp_path)
    r = run("kms", "encrypt", key, "x", data=tmp_path)
    assert r.returncode == 1 and "DisabledException" in r.stderr
    ok("enable", key, data=tmp_path)
    sched = ok("schedule-deletion", key, "--days", "7", data=tmp_path)
    assert sched["KeyState"] == "PendingDeletion"
    r = run("kms", "schedule-deletion", key, "--days", "3", data=tmp_path)
    assert r.returncode == 1 and "ValidationException" in r.stderr
    ok("cancel-deletion", key, data=tmp_path)
    assert ok("describe", key, data=tmp_path)["KeyMetadata"]["KeyState"] == "Disabled"


def test_aliases_and_other_specs(tmp_path: Path):
    a = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    b = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    signer = ok("create-key", "--spec", "ECC_NIST_P256", data=tmp_path)["KeyMetadata"]
    assert signer["KeyUsage"] == "SIGN_VERIFY"
    ok("alias", "create", "app", a, data=tmp_path)
    ok("alias", "update", "alias/app", b, data=tmp_path)
    r = run("kms", "alias", "list", "--json", data=tmp_path)
    assert [x["TargetKeyId"] for x in json.loads(r.stdout)] == [b]
    r = run("kms", "alias", "create", "aws/x", a, data=tmp_path)
    assert r.returncode == 1 and "InvalidAliasNameException" in r.stderr
    ok("alias", "delete", "app", data=tmp_path)
    r = run("kms", "describe", "alias/app", data=tmp_path)
    assert r.returncode == 1 and "NotFoundException" in r.stderr


def test_encrypt_from_file_and_oversized_input(tmp_path: Path):
    key = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 16)  # 4096 bytes: the limit
    blob = ok("encrypt", key, "--in", str(src), data=tmp_path)["CiphertextBlob"]
    dec = ok("decrypt", blob, data=tmp_path)
    assert base64.b64decode(dec["Plaintext"]) == src.read_bytes()
    src.write_bytes(b"x" * 4097)
    r = run("kms", "encrypt", key, "--in", str(src), data=tmp_path)
    assert r.returncode == 1 and "ValidationException" in r.stderr
    r = run("kms", "encrypt", key, "text", "--context", "novalue", data=tmp_path)
    assert r.returncode == 2


def test_read_commands_refuse_a_missing_data_dir(tmp_path: Path):
    missing = tmp_path / "nothing-here"
    r = run("kms", "list-keys", data=missing)
    assert r.returncode == 2 and not missing.exists()


def test_unavailable_root_is_a_clear_error(tmp_path: Path):
    import os

    env = {**os.environ, "BASTION_ROOT_KEEPER": "pkcs11",
           "BASTION_PKCS11_TOKEN_LABEL": "no-such-token", "BASTION_PKCS11_PIN": "1234"}
    r = run("kms", "create-key", data=tmp_path, env=env)
    assert r.returncode == 1, r.stderr
    assert "KMS root key is unavailable" in r.stderr and "no-such-token" in r.stderr
    assert "1234" not in r.stderr and "Traceback" not in r.stderr
