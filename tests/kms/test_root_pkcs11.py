"""The ``pkcs11`` root keeper against a real SoftHSM2 token: the root is generated inside the
token, sensitive and not extractable; wrapping is bound to its context; a wrong PIN or a
missing token fails closed with a clear error and the keeper recovers; concurrent use is
serialised."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from bastion.kms.pkcs11keeper import Pkcs11Keeper
from bastion.kms.root import RootUnavailable, RootUnwrapError
from bastion.runtime import open_provider
from tests.conftest import make_settings
from tests.kms.conftest import admin_caller, b64, unb64

pytestmark = pytest.mark.anyio


def keeper(hsm: dict[str, str], label: str | None = None, **kw: object) -> Pkcs11Keeper:
    k = Pkcs11Keeper(hsm["module"], hsm["token"], kw.pop("pin", hsm["pin"]),  # type: ignore[arg-type]
                     label or "root-" + secrets.token_hex(4), **kw)  # type: ignore[arg-type]
    k.open()
    return k


async def test_root_generated_in_token_non_extractable(softhsm):
    label = "root-" + secrets.token_hex(4)
    k = keeper(softhsm, label)
    try:
        # logged in already: PKCS#11 login state is per application (this process)
        session = pkcs11.lib(softhsm["module"]).get_token(token_label=softhsm["token"]).open()
        with session:
            root = session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES,
                                   label=label)
            assert root[Attribute.SENSITIVE] is True
            assert root[Attribute.EXTRACTABLE] is False
            assert root[Attribute.NEVER_EXTRACTABLE] is True
            assert root[Attribute.TOKEN] is True
            assert root[Attribute.VALUE_LEN] == 32
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                root[Attribute.VALUE]  # noqa: B018 - the token refuses to reveal it
    finally:
        k.close()


async def test_wrap_unwrap_bound_to_context_and_persistent(softhsm):
    label = "root-" + secrets.token_hex(4)
    k = keeper(softhsm, label)
    try:
        wrapped = await k.wrap(b"m" * 32, "kms:key/x/v1")
        assert b"m" * 32 not in wrapped
        assert await k.unwrap(wrapped, "kms:key/x/v1") == b"m" * 32
        with pytest.raises(RootUnwrapError):
            await k.unwrap(wrapped, "kms:key/x/v2")
        for i in (1, 13, len(wrapped) - 1):
            bad = bytearray(wrapped)
            bad[i] ^= 1
            with pytest.raises(RootUnwrapError):
                await k.unwrap(bytes(bad), "kms:key/x/v1")
        with pytest.raises(RootUnwrapError):
            await k.unwrap(wrapped[:10], "kms:key/x/v1")
        await k.health()
    finally:
        k.close()
    again = keeper(softhsm, label)  # the same root key object, found by its label
    try:
        assert await again.unwrap(wrapped, "kms:key/x/v1") == b"m" * 32
    finally:
        again.close()
    other = keeper(softhsm)  # another root key does not open it
    try:
        with pytest.raises(RootUnwrapError):
            await other.unwrap(wrapped, "kms:key/x/v1")
    finally:
        other.close()


async def test_concurrent_calls_are_serialised(softhsm):
    k = keeper(softhsm)
    try:
        blobs = await asyncio.gather(*(k.wrap(bytes([i]) * 32, f"c{i}") for i in range(64)))
        plain = await asyncio.gather(*(k.unwrap(b, f"c{i}") for i, b in enumerate(blobs)))
        assert plain == [bytes([i]) * 32 for i in range(64)]
    finally:
        k.close()


async def test_wrong_pin_and_missing_token_fail_closed(softhsm):
    with pytest.raises(RootUnavailable, match="wrong PIN"):
        Pkcs11Keeper(softhsm["module"], softhsm["other"], "0000-wrong", "root").open()
    with pytest.raises(RootUnavailable, match="not available"):
        Pkcs11Keeper(softhsm["module"], "no-such-token", softhsm["pin"], "root").open()


async def test_recovers_when_the_pin_is_fixed(softhsm, tmp_path: Path):
    """Fail closed while the PIN is wrong, recover on a later call once it is right."""
    pin_file = tmp_path / "pin"
    pin_file.write_text("0000-wrong")
    k = Pkcs11Keeper(softhsm["module"], softhsm["other"], lambda: pin_file.read_text(),
                     "root-" + secrets.token_hex(4), retry_interval=0)
    try:
        with pytest.raises(RootUnavailable, match="wrong PIN"):
            await k.wrap(b"x" * 32, "c")
        pin_file.write_text(softhsm["pin"])
        wrapped = await k.wrap(b"x" * 32, "c")
        assert await k.unwrap(wrapped, "c") == b"x" * 32
    finally:
        k.close()


async def test_recovers_after_the_session_dies(softhsm):
    k = keeper(softhsm, retry_interval=0)
    try:
        wrapped = await k.wrap(b"y" * 32, "c")
        k._executor.submit(k._drop_session_for_test).result()
        assert await k.unwrap(wrapped, "c") == b"y" * 32
    finally:
        k.close()


async def test_provider_on_softhsm_survives_restart(softhsm, tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    settings = make_settings(tmp_path, url, root_keeper="pkcs11",
                             pkcs11_module=softhsm["module"],
                             pkcs11_token_label=softhsm["token"], pkcs11_pin=softhsm["pin"],
                             pkcs11_key_label="root-" + secrets.token_hex(4))
    p = await open_provider(settings)
    try:
        c = admin_caller(p)
        key = (await p.kms.call("CreateKey", {}, c))["KeyMetadata"]["KeyId"]
        blob = (await p.kms.call("Encrypt", {"KeyId": key, "Plaintext": b64(b"in hsm")},
                                 c))["CiphertextBlob"]
        rows = await p.fast.all("SELECT keeper FROM kms_key_versions")
        assert [r[0] for r in rows] == ["pkcs11", "pkcs11"]  # and the secrets key's
    finally:
        await p.close()
    p = await open_provider(settings)
    try:
        out = await p.kms.call("Decrypt", {"CiphertextBlob": blob}, admin_caller(p))
        assert unb64(out["Plaintext"]) == b"in hsm"
    finally:
        await p.close()
    bad = settings.model_copy(update={"pkcs11_pin": None,
                                      "pkcs11_pin_file": tmp_path / "missing-pin"})
    with pytest.raises(RootUnavailable, match="pkcs11_pin_file"):
        await open_provider(bad)


async def test_hsm_gone_fails_closed_then_recovers(softhsm, tmp_path: Path):
    """The token session dies and the PIN is wrong meanwhile: calls that need the root get
    KMSInternalException (500, nothing secret in it); once the PIN is right they work."""
    from bastion.kms.errors import KMSError

    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm["pin"] + "\n")
    pin_file.chmod(0o600)
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
                             root_keeper="pkcs11", pkcs11_module=softhsm["module"],
                             pkcs11_token_label=softhsm["other"], pkcs11_pin_file=pin_file,
                             pkcs11_key_label="root-" + secrets.token_hex(4))
    p = await open_provider(settings)
    try:
        c = admin_caller(p)
        key = (await p.kms.call("CreateKey", {}, c))["KeyMetadata"]["KeyId"]
        blob = (await p.kms.call("Encrypt", {"KeyId": key, "Plaintext": b64(b"z")},
                                 c))["CiphertextBlob"]
        k = p.kms.keeper
        assert isinstance(k, Pkcs11Keeper)
        k._retry_interval = 0
        pin_file.write_text("0000-wrong")
        k._executor.submit(k._drop).result()  # the session (and its login) is gone
        p.kms._material.clear()  # nothing cached: the next call needs the HSM
        for op, req in (("Decrypt", {"CiphertextBlob": blob}), ("CreateKey", {}),
                        ("RotateKeyOnDemand", {"KeyId": key})):
            with pytest.raises(KMSError) as info:
                await p.kms.call(op, req, c)
            assert info.value.code == "KMSInternalException" and info.value.status == 500
            assert softhsm["pin"] not in info.value.message
        pin_file.write_text(softhsm["pin"])
        out = await p.kms.call("Decrypt", {"CiphertextBlob": blob}, c)
        assert unb64(out["Plaintext"]) == b"z"
        # nothing changed while the root was away: one key, still on its first version
        assert len((await p.kms.call("ListKeys", {}, c))["Keys"]) == 2  # and the secrets key
        assert (await p.kms.call("ListKeyRotations", {"KeyId": key}, c))["Rotations"] == []
    finally:
        await p.close()
