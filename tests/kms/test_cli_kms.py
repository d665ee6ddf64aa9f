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
    assert [(k["KeyId"], k["Aliases"]) for k in listed  # and Bastion's own secrets key
            if k["Aliases"] != ["alias/bastion/secrets"]] == [(key, ["alias/cli"])]

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
    assert [x["TargetKeyId"] for x in json.loads(r.stdout)
            if not x["AliasName"].startswith("alias/bastion/")] == [b]
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


# --- encrypt-file / decrypt-file ------------------------------------------------------------
def _bastion_rss(*args: str, data: Path) -> tuple[int, int]:
    """Run ``bastion ARGS`` and return (exit status, peak RSS in KiB) of that process."""
    import subprocess
    import time

    from tests.test_cli import BASTION

    # VmHWM of the process's own address space: ru_maxrss would carry pytest's own peak,
    # which Linux keeps across fork and exec
    proc = subprocess.Popen([BASTION, *args, "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    status_file = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status_file) as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return proc.returncode, peak


def test_encrypt_file_100_mib_round_trip_in_bounded_memory(tmp_path: Path):
    import hashlib
    import os

    key = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    src = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(100):  # 100 MiB: exactly 100 chunks of the default 1 MiB
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    rc, rss_enc = _bastion_rss("kms", "encrypt-file", key, str(src), "--context", "k=v",
                               data=tmp_path)
    assert rc == 0
    enc = tmp_path / "big.bin.bkms"
    assert enc.stat().st_size > 100 << 20
    src.unlink()
    rc, rss_dec = _bastion_rss("kms", "decrypt-file", str(enc), data=tmp_path)
    assert rc == 0
    check = hashlib.sha256()
    with src.open("rb") as f:
        while block := f.read(1 << 20):
            check.update(block)
    assert check.digest() == digest.digest()
    # the interpreter and Bastion take ~100 MiB; the file never is in memory
    assert max(rss_enc, rss_dec) < 180 * 1024, (rss_enc, rss_dec)


def test_encrypt_file_stdin_stdout_and_json(tmp_path: Path):
    import subprocess

    from tests.test_cli import BASTION

    key = ok("create-key", "--alias", "files", data=tmp_path)["KeyMetadata"]["KeyId"]
    data = bytes(range(256)) * 5000
    base = [BASTION, "kms"]
    dd = ["--data-dir", str(tmp_path)]
    enc = subprocess.run([*base, "encrypt-file", "alias/files", "-", "--context", "a=1", *dd],
                         input=data, capture_output=True, timeout=60, check=False)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout.startswith(b"BKMF") and data not in enc.stdout
    dec = subprocess.run([*base, "decrypt-file", "-", "--context", "a=1", "--key", key, *dd],
                         input=enc.stdout, capture_output=True, timeout=60, check=False)
    assert dec.returncode == 0 and dec.stdout == data, dec.stderr
    (tmp_path / "x.bkms").write_bytes(enc.stdout)
    out = ok("decrypt-file", str(tmp_path / "x.bkms"), data=tmp_path)
    assert out["Bytes"] == len(data) and out["EncryptionContext"] == {"a": "1"}
    assert (tmp_path / "x").read_bytes() == data
    r = run("kms", "decrypt-file", "-", "--json", data=tmp_path)
    assert r.returncode == 2 and "--json needs --out" in r.stderr


def test_decrypt_file_failures_leave_no_plaintext(tmp_path: Path):
    key = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    other = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    src = tmp_path / "plain.txt"
    src.write_bytes(b"top secret line\n" * 200_000)  # 3.2 MiB: 4 chunks
    ok("encrypt-file", key, str(src), "--context", "app=x", data=tmp_path)
    enc = tmp_path / "plain.txt.bkms"
    r = run("kms", "encrypt-file", key, str(src), data=tmp_path)
    assert r.returncode == 1 and "exists" in r.stderr  # no silent overwrite
    good = enc.read_bytes()
    out = tmp_path / "out.txt"

    def files() -> set[str]:
        return {p.name for p in tmp_path.iterdir()}

    before = files()
    bad = bytearray(good)
    bad[-5] ^= 1  # in the last chunk: three chunks of plaintext were written first
    enc.write_bytes(bytes(bad))
    r = run("kms", "decrypt-file", str(enc), "-o", str(out), data=tmp_path)
    assert r.returncode == 1 and "tampered" in r.stderr
    assert files() == before and "secret" not in r.stdout + r.stderr
    enc.write_bytes(good[:-100])
    r = run("kms", "decrypt-file", str(enc), "-o", str(out), data=tmp_path)
    assert r.returncode == 1 and "truncated" in r.stderr and files() == before
    enc.write_bytes(good)
    r = run("kms", "decrypt-file", str(enc), "-o", str(out), "--key", other, data=tmp_path)
    assert r.returncode == 1 and "IncorrectKeyException" in r.stderr and files() == before
    r = run("kms", "decrypt-file", str(enc), "-o", str(out), "--context", "app=y",
            data=tmp_path)
    assert r.returncode == 1 and "'app'" in r.stderr and files() == before
    r = run("kms", "decrypt-file", str(src), "-o", str(out), data=tmp_path)
    assert r.returncode == 1 and "not a Bastion encrypted file" in r.stderr
    ok("disable", key, data=tmp_path)
    r = run("kms", "decrypt-file", str(enc), "-o", str(out), data=tmp_path)
    assert r.returncode == 1 and "DisabledException" in r.stderr and files() == before
    r = run("kms", "encrypt-file", key, str(src), "-o", str(tmp_path / "new"), data=tmp_path)
    assert r.returncode == 1 and "DisabledException" in r.stderr and files() == before
    ok("enable", key, data=tmp_path)
    r = run("kms", "decrypt-file", str(enc), "-o", str(src), data=tmp_path)
    assert r.returncode == 1 and "--force" in r.stderr
    ok("decrypt-file", str(enc), "-o", str(src), "--force", data=tmp_path)
    assert src.read_bytes() == b"top secret line\n" * 200_000
    r = run("kms", "decrypt-file", str(tmp_path / "missing.bkms"), "-o", str(out),
            data=tmp_path)
    assert r.returncode == 1 and "cannot read" in r.stderr
    r = run("kms", "encrypt-file", key, str(src), "--chunk-size", "10", data=tmp_path)
    assert r.returncode == 2


def test_encrypt_file_progress_bar_on_a_terminal(tmp_path: Path):
    import os
    import pty
    import subprocess

    from tests.test_cli import BASTION

    key = ok("create-key", data=tmp_path)["KeyMetadata"]["KeyId"]
    src = tmp_path / "p.bin"
    src.write_bytes(b"\0" * (4 << 20))
    master, slave = pty.openpty()
    proc = subprocess.Popen([BASTION, "kms", "encrypt-file", key, str(src), "--data-dir",
                             str(tmp_path)], stderr=slave, stdout=subprocess.DEVNULL,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"})
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    import re

    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen)  # rich's colours and cursor moves
    assert b"encrypting" in text and b"encrypted 4194304 bytes" in text
    r = run("kms", "decrypt-file", str(tmp_path / "p.bin.bkms"), "-o", str(tmp_path / "q"),
            data=tmp_path)
    assert r.returncode == 0 and "decrypting" not in r.stderr  # no bar when not a terminal
