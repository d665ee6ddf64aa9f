"""``bastion acme eab create``: a key id and an HMAC key, with an optional IAM policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.test_cli import run

POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": ["acme:NewOrder", "acme:Finalize"],
    "Resource": "arn:bastion:acme:::identifier/*.team.test"}]}


def test_eab_create(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    keys = []
    for extra in ([], ["--policy", str(policy)]):
        r = run("acme", "eab", "create", "--json", *extra, data=tmp_path / "data")
        assert r.returncode == 0, r.stderr
        keys.append(json.loads(r.stdout))
    for key in keys:
        assert key["kid"].startswith("eab-")
        mac = key["hmac_key"]
        assert not mac.startswith("-") and "=" not in mac  # pasteable after --eab-hmac-key
        assert len(base64.urlsafe_b64decode(mac + "=")) == 32
    assert keys[0]["kid"] != keys[1]["kid"]


def test_eab_create_refuses_a_bad_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"Version": "2012-10-17", "Statement": [{"Effect": "Maybe"}]}')
    r = run("acme", "eab", "create", "--policy", str(policy), data=tmp_path / "data")
    assert r.returncode == 1
    assert "policy is not valid" in r.stderr
