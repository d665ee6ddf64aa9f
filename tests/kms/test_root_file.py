"""The ``file`` root keeper: the data dir's KEK, or a passphrase-sealed root; contexts bind
wrapped values; a wrong passphrase or a readable file fails closed at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.kms.filekeeper import SEALED_FILE, FileKeeper
from bastion.kms.keyfile import KEK_FILE
from bastion.kms.root import RootUnavailable, RootUnwrapError
from bastion.runtime import open_provider
from tests.conftest import make_settings
from tests.kms.conftest import admin_caller, b64, unb64

pytestmark = pytest.mark.anyio


async def test_wrap_round_trip_bound_to_context(tmp_path: Path):
    keeper = FileKeeper.open(tmp_path)
    assert (tmp_path / KEK_FILE).stat().st_mode & 0o777 == 0o600
    wrapped = await keeper.wrap(b"k" * 32, "kms:key/a/v1")
    assert b"k" * 32 not in wrapped
    assert await keeper.unwrap(wrapped, "kms:key/a/v1") == b"k" * 32
    with pytest.raises(RootUnwrapError):
        await keeper.unwrap(wrapped, "kms:key/a/v2")  # moved to another version
    with pytest.raises(RootUnwrapError):
        await keeper.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), "kms:key/a/v1")
    await keeper.health()
    # a second opening (another process) uses the same root
    assert await FileKeeper.open(tmp_path).unwrap(wrapped, "kms:key/a/v1") == b"k" * 32


async def test_sealed_root_needs_its_passphrase(tmp_path: Path):
    keeper = FileKeeper.open(tmp_path, "correct horse battery staple")
    assert (tmp_path / SEALED_FILE).stat().st_mode & 0o777 == 0o600
    assert b"correct horse" not in (tmp_path / SEALED_FILE).read_bytes()
    wrapped = await keeper.wrap(b"material", "ctx")
    again = FileKeeper.open(tmp_path, "correct horse battery staple")
    assert await again.unwrap(wrapped, "ctx") == b"material"
    with pytest.raises(RootUnavailable, match="wrong root passphrase"):
        FileKeeper.open(tmp_path, "wrong passphrase")
    # the unsealed KEK is another root: it does not open what the sealed root wrapped
    with pytest.raises(RootUnwrapError):
        await FileKeeper.open(tmp_path).unwrap(wrapped, "ctx")


async def test_sealed_file_readable_by_others_or_garbled_fails_closed(tmp_path: Path):
    FileKeeper.open(tmp_path, "pass phrase one")
    path = tmp_path / SEALED_FILE
    os.chmod(path, 0o644)
    with pytest.raises(RootUnavailable, match="readable by group or others"):
        FileKeeper.open(tmp_path, "pass phrase one")
    os.chmod(path, 0o600)
    path.write_text('{"v": 1, "kdf": "scrypt", "n": 2, "r": 1, "p": 1}')
    with pytest.raises(RootUnavailable, match="not a sealed root key file"):
        FileKeeper.open(tmp_path, "pass phrase one")


async def test_provider_with_sealed_root_survives_restart(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    settings = make_settings(tmp_path, url, root_passphrase="a long root passphrase")
    p = await open_provider(settings)
    try:
        c = admin_caller(p)
        key = (await p.kms.call("CreateKey", {}, c))["KeyMetadata"]["KeyId"]
        blob = (await p.kms.call("Encrypt", {"KeyId": key, "Plaintext": b64(b"kept")},
                                 c))["CiphertextBlob"]
    finally:
        await p.close()
    p = await open_provider(settings)
    try:
        out = await p.kms.call("Decrypt", {"CiphertextBlob": blob}, admin_caller(p))
        assert unb64(out["Plaintext"]) == b"kept"
    finally:
        await p.close()
    with pytest.raises(RootUnavailable):
        await open_provider(make_settings(tmp_path, url, root_passphrase="not the one"))
