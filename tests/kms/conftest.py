"""KMS fixtures: a real SoftHSM2 token (its own config and token dir, made for this test
session), callers with IAM policies, and helpers for wire-shaped requests."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.config import Settings
from bastion.iam.authorizer import Subject
from bastion.kms.service import Caller
from bastion.oauth.provider import Provider
from bastion.runtime import open_provider
from tests.conftest import _reset, make_settings

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "bastion-test"
OTHER_TOKEN = "bastion-other"
PIN = "4711-" + secrets.token_hex(4)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two initialised SoftHSM2 tokens in a private token dir. The PKCS#11 module is loaded
    once per process and reads SOFTHSM2_CONF then, so this is session-wide."""
    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        pytest.fail("softhsm2 is not installed (scripts/system-deps.sh installs it)")
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label in (TOKEN_LABEL, OTHER_TOKEN):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                        "--pin", PIN, "--so-pin", "so-" + PIN], env=env, check=True,
                       capture_output=True)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield {"module": SOFTHSM_MODULE, "token": TOKEN_LABEL, "other": OTHER_TOKEN, "pin": PIN,
           "conf": str(conf)}
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture(params=["file", "pkcs11"])
def keeper_settings(request: pytest.FixtureRequest, tmp_path: Path,
                    database_url: str) -> Settings:
    if request.param == "file":
        return make_settings(tmp_path, database_url)
    hsm = request.getfixturevalue("softhsm")
    return make_settings(tmp_path, database_url, root_keeper="pkcs11",
                         pkcs11_module=hsm["module"], pkcs11_token_label=hsm["token"],
                         pkcs11_pin=hsm["pin"],
                         pkcs11_key_label="root-" + secrets.token_hex(4))


@pytest.fixture
async def kp(keeper_settings: Settings) -> AsyncIterator[Provider]:
    """A provider on either root keeper (and either database)."""
    await _reset(keeper_settings.effective_database_url)
    p = await open_provider(keeper_settings)
    try:
        yield p
    finally:
        await p.close()


def admin_caller(p: Provider) -> Caller:
    return Caller("local-operator:test", p.settings.account_id, operator=True,
                  request_id="test")


def user_caller(p: Provider, user_id: str, name: str = "alice", **kw: Any) -> Caller:
    """A caller authenticated as IAM user ``name`` (``user_id``: its id, as tokens carry)."""
    return Caller(f"arn:bastion:iam::{p.settings.account_id}:user/{name}",
                  p.settings.account_id, subject=Subject("user", user_id), **kw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
