"""kms/migrate.py and ``bastion kms migrate-root``: the root moves between the ``file``
keeper and a real SoftHSM2 token without re-encrypting data, and a crash at every step
(a SIGKILL of the migrating process) leaves every ciphertext decryptable by the old or the
new root; running the migration again finishes it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bastion.config import Settings
from bastion.kms.errors import KMSError
from bastion.kms.migrate import STEPS, MigrationError, migrate_root
from bastion.kms.root import RootUnavailable, open_root_keeper
from bastion.runtime import open_provider
from bastion.store.fast import open_fast_store
from tests.conftest import _reset, make_settings
from tests.kms.conftest import admin_caller, b64
from tests.test_cli import run

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
OWN = 1  # key versions Bastion makes itself at start: the secrets key's (kms/secrets.py)


def hsm_over(hsm: dict[str, str], label: str) -> dict[str, Any]:
    return {"pkcs11_module": hsm["module"], "pkcs11_token_label": hsm["token"],
            "pkcs11_pin": hsm["pin"], "pkcs11_key_label": label}


def both(tmp_path: Path, url: str, over: dict[str, Any]) -> tuple[Settings, Settings]:
    """(file settings, pkcs11 settings) over one data dir and database."""
    return (make_settings(tmp_path, url, **over),
            make_settings(tmp_path, url, root_keeper="pkcs11", **over))


async def populate(settings: Settings) -> dict[str, Any]:
    """Keys of each kind with something each protects: a symmetric key with two versions
    (a ciphertext under each), an ECDSA key (a signature), an HMAC key (a MAC)."""
    p = await open_provider(settings)
    try:
        kms, who = p.kms, admin_caller(p)
        sym = (await kms.call("CreateKey", {}, who))["KeyMetadata"]["KeyId"]
        blobs = [(await kms.call("Encrypt", {"KeyId": sym, "Plaintext": b64(b"v1 data"),
                                            "EncryptionContext": {"a": "1"}}, who))
                 ["CiphertextBlob"]]
        await kms.call("RotateKeyOnDemand", {"KeyId": sym}, who)
        blobs.append((await kms.call("Encrypt", {"KeyId": sym, "Plaintext": b64(b"v2 data"),
                                                "EncryptionContext": {"a": "1"}}, who))
                     ["CiphertextBlob"])
        ec = (await kms.call("CreateKey", {"KeySpec": "ECC_NIST_P256",
                                           "KeyUsage": "SIGN_VERIFY"}, who))["KeyMetadata"]
        sig = (await kms.call("Sign", {"KeyId": ec["KeyId"], "Message": b64(b"m"),
                                       "SigningAlgorithm": "ECDSA_SHA_256"}, who))["Signature"]
        mac_key = (await kms.call("CreateKey", {"KeySpec": "HMAC_256",
                                                "KeyUsage": "GENERATE_VERIFY_MAC"}, who))
        mac = (await kms.call("GenerateMac", {"KeyId": mac_key["KeyMetadata"]["KeyId"],
                                              "Message": b64(b"m"),
                                              "MacAlgorithm": "HMAC_SHA_256"}, who))["Mac"]
        return {"sym": sym, "blobs": blobs, "ec": ec["KeyId"], "sig": sig,
                "mac_key": mac_key["KeyMetadata"]["KeyId"], "mac": mac}
    finally:
        await p.close()


async def opens_all(settings: Settings, state: dict[str, Any]) -> bool:
    """True when this root decrypts and uses everything; False when the KMS says the
    material does not open under it (KMSInternalException, or at start: Bastion's own
    secrets key does not open, kms/secrets.py); anything else fails."""
    try:
        p = await open_provider(settings)
    except RootUnavailable as exc:
        assert "KMSInternalException" in str(exc), exc
        return False
    try:
        kms, who = p.kms, admin_caller(p)
        for blob, plain in zip(state["blobs"], (b"v1 data", b"v2 data"), strict=True):
            out = await kms.call("Decrypt", {"CiphertextBlob": blob,
                                             "EncryptionContext": {"a": "1"}}, who)
            assert out["Plaintext"] == b64(plain)
        out = await kms.call("Sign", {"KeyId": state["ec"], "Message": b64(b"x"),
                                      "SigningAlgorithm": "ECDSA_SHA_256"}, who)
        assert out["Signature"]
        out = await kms.call("VerifyMac", {"KeyId": state["mac_key"], "Message": b64(b"m"),
                                           "MacAlgorithm": "HMAC_SHA_256",
                                           "Mac": state["mac"]}, who)
        assert out["MacValid"] is True
        await kms.call("Encrypt", {"KeyId": state["sym"], "Plaintext": b64(b"new")}, who)
        return True
    except KMSError as exc:
        assert exc.code == "KMSInternalException", exc
        return False
    finally:
        await p.close()


async def leftover_wrappings(settings: Settings) -> list[str]:
    # the database alone: a server on a root that wraps nothing no longer starts
    fast = await open_fast_store(settings.effective_database_url)
    try:
        rows = await fast.all("SELECT keeper FROM kms_root_wrappings")
        return sorted(str(r[0]) for r in rows)
    finally:
        await fast.close()


async def migrate(source: Settings, target: Settings, crash_at: str | None = None) -> Any:
    p = await open_provider(source)
    new = open_root_keeper(target)

    async def checkpoint(step: str) -> None:
        if step == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        return await migrate_root(p.kms.fast, p.kms.keeper, new, checkpoint=checkpoint)
    finally:
        new.close()
        await p.close()


@pytest.fixture
def roots(tmp_path: Path, database_url: str, softhsm: dict[str, str]
          ) -> tuple[Settings, Settings, dict[str, Any]]:
    over = hsm_over(softhsm, "root-" + secrets.token_hex(4))
    old, new = both(tmp_path, database_url, over)
    return old, new, {"tmp_path": str(tmp_path), "url": database_url, "over": over}


async def test_file_to_pkcs11_and_back_without_re_encrypting(roots: Any):
    old, new, _ = roots
    await _reset(old.effective_database_url)
    state = await populate(old)
    assert await opens_all(new, state) is False  # the token's root wraps nothing yet
    report = await migrate(old, new)
    # the keys' 4 versions and the secrets key's (kms/secrets.py)
    assert (report.source, report.target, report.versions) == ("file", "pkcs11", 4 + OWN)
    assert report.switched == 4 + OWN and report.dropped == 4 + OWN
    assert await opens_all(new, state) is True  # the same ciphertexts, untouched
    assert await opens_all(old, state) is False  # the old wrappings are gone
    assert await leftover_wrappings(old) == []
    with pytest.raises(MigrationError, match="already"):
        await migrate(new, new)
    back = await migrate(new, old)
    assert (back.source, back.target, back.switched) == ("pkcs11", "file", 4 + OWN)
    assert await opens_all(old, state) is True and await opens_all(new, state) is False


@pytest.mark.parametrize("step", STEPS)
async def test_a_crash_at_each_step_leaves_everything_decryptable(roots: Any, step: str):
    old, new, args = roots
    await _reset(old.effective_database_url)
    state = await populate(old)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, json.dumps({**args, "crash_at": step}), cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert await proc.wait() == -signal.SIGKILL  # killed at the checkpoint, not before
    old_ok, new_ok = await opens_all(old, state), await opens_all(new, state)
    expected = {"staged-first": (True, False), "staged": (True, True),
                "switched": (True, True), "dropped": (False, True)}[step]
    assert (old_ok, new_ok) == expected
    # running it again finishes the job (and from "dropped" there is nothing left to do)
    source = new if step == "dropped" else old
    if step == "dropped":
        with pytest.raises(MigrationError, match="already"):
            await migrate(source, new)
    else:
        report = await migrate(source, new)
        assert report.versions == 4 + OWN
    assert await opens_all(new, state) is True and await opens_all(old, state) is False
    assert await leftover_wrappings(old) == []


async def test_versions_created_while_staging_are_staged_before_the_switch(roots: Any):
    old, new, _ = roots
    await _reset(old.effective_database_url)
    state = await populate(old)
    p = await open_provider(old)
    target = open_root_keeper(new)
    rotated = []

    async def rotate_once(step: str) -> None:
        if step == "staged" and not rotated:  # a rotation lands between stage and switch
            rotated.append(await p.kms.call("RotateKeyOnDemand", {"KeyId": state["sym"]},
                                            admin_caller(p)))

    try:
        report = await migrate_root(p.kms.fast, p.kms.keeper, target, checkpoint=rotate_once)
    finally:
        target.close()
        await p.close()
    assert rotated and report.versions == 5 + OWN and report.switched == 5 + OWN
    assert await opens_all(new, state) is True


async def test_an_unreachable_new_root_changes_nothing(roots: Any):
    old, new, _ = roots
    await _reset(old.effective_database_url)
    state = await populate(old)
    with pytest.raises(RootUnavailable):
        open_root_keeper(new.model_copy(update={"pkcs11_pin": SecretStr("wrong-pin")}))
    assert await opens_all(old, state) is True and await leftover_wrappings(old) == []


def test_cli_migrate_root_with_softhsm(tmp_path: Path, softhsm: dict[str, str]):
    env = {**os.environ, "BASTION_PKCS11_MODULE": softhsm["module"],
           "BASTION_PKCS11_TOKEN_LABEL": softhsm["token"], "BASTION_PKCS11_PIN": softhsm["pin"],
           "BASTION_PKCS11_KEY_LABEL": "cli-" + secrets.token_hex(4)}
    r = run("kms", "create-key", "--json", data=tmp_path, env=env)
    key = json.loads(r.stdout)["KeyMetadata"]["KeyId"]
    blob = run("kms", "encrypt", key, "hello", data=tmp_path, env=env).stdout.strip()
    r = run("kms", "migrate-root", "--to", "pkcs11", data=tmp_path,
            env={**env, "BASTION_PKCS11_PIN": "not-the-pin"})
    assert r.returncode == 1 and "unavailable" in r.stderr and "not-the-pin" not in r.stderr
    assert run("kms", "decrypt", blob, data=tmp_path, env=env).stdout == "hello"
    r = run("kms", "migrate-root", "--to", "hsm", data=tmp_path, env=env)
    assert r.returncode == 2
    r = run("kms", "migrate-root", "--to", "pkcs11", "--json", data=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"From": "file", "To": "pkcs11", "KeyVersions": 1 + OWN,
                                    "Rewrapped": 1 + OWN, "DroppedOldWrappings": 1 + OWN}
    hsm_env = {**env, "BASTION_ROOT_KEEPER": "pkcs11"}
    assert run("kms", "decrypt", blob, data=tmp_path, env=hsm_env).stdout == "hello"
    r = run("kms", "decrypt", blob, data=tmp_path, env=env)
    assert r.returncode == 1 and "KMSInternalException" in r.stderr
    r = run("kms", "migrate-root", "--to", "pkcs11", data=tmp_path, env=hsm_env)
    assert r.returncode == 1 and "already 'pkcs11'" in r.stderr
    audit = run("audit", "search", "--event", "UpdateConfiguration", data=tmp_path,
                env=hsm_env)
    records = [json.loads(line) for line in audit.stdout.splitlines()]
    assert len(records) == 1, audit.stderr
    assert records[0]["requestParameters"] == {"rootKeeper": {"from": "file", "to": "pkcs11"}}


if __name__ == "__main__":  # the process the crash test kills at a checkpoint
    args = json.loads(sys.argv[1])
    _old, _new = both(Path(args["tmp_path"]), args["url"], args["over"])
    asyncio.run(migrate(_old, _new, crash_at=args["crash_at"]))
    sys.exit(3)  # not killed: the checkpoint was never reached
