"""Signed checkpoints: the signed body, signatures, the JSON kept elsewhere, and the chain of
checkpoints (gaps, rollbacks, forks)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.chain import GENESIS
from bastion.audit.checkpoint import (
    MAX_DOCUMENT,
    Checkpoint,
    CheckpointFormatError,
    checkpoint_body,
    checkpoint_hash,
    from_json,
    sign_checkpoint,
    to_json,
    verify_checkpoint,
    verify_checkpoint_chain,
)

KEY = Ed25519PrivateKey.generate()
KEYS = {"audit-1": KEY.public_key()}
ROOT, LAST = bytes(range(32)), bytes(range(32, 64))


def series(n: int = 4) -> list[Checkpoint]:
    out, previous = [], GENESIS
    for i in range(1, n + 1):
        cp = sign_checkpoint(KEY, "audit-1", 100 * i, bytes([i]) * 32, bytes([i + 100]) * 32,
                             1_700_000_000_000 + i, previous)
        out.append(cp)
        previous = checkpoint_hash(cp)
    return out


def test_body_is_canonical_and_domain_separated() -> None:
    body = checkpoint_body(7, ROOT, LAST, 1_700_000_000_123, GENESIS, "audit-1")
    assert body == (b"bastion-audit-checkpoint/v1\ntree_size 7\nroot_hash " + ROOT.hex().encode()
                    + b"\nlast_hash " + LAST.hex().encode() + b"\ntimestamp 1700000000123\n"
                    b"previous " + bytes(32).hex().encode() + b"\nkey_id audit-1\n")


def test_sign_and_verify() -> None:
    cp = sign_checkpoint(KEY, "audit-1", 7, ROOT, LAST, 1, GENESIS)
    assert verify_checkpoint(cp, KEYS) and cp.verify(KEYS)
    assert len(cp.signature) == 64


@pytest.mark.parametrize("change", [
    {"tree_size": 8}, {"root_hash": LAST}, {"last_hash": ROOT}, {"timestamp": 2},
    {"previous": ROOT}, {"key_id": "audit-2"}, {"signature": bytes(64)},
    {"signature": b"short"}, {"key_id": "bad id"}, {"tree_size": -1}, {"root_hash": b"x"},
], ids=["tree_size", "root_hash", "last_hash", "timestamp", "previous", "key_id",
        "zero-signature", "short-signature", "key-id-with-space", "negative-size",
        "short-root"])
def test_any_change_breaks_the_signature(change: dict[str, Any]) -> None:
    cp = sign_checkpoint(KEY, "audit-1", 7, ROOT, LAST, 1, GENESIS)
    assert not verify_checkpoint(dataclasses.replace(cp, **change), KEYS)


def test_another_key_does_not_verify() -> None:
    cp = sign_checkpoint(Ed25519PrivateKey.generate(), "audit-1", 7, ROOT, LAST, 1, GENESIS)
    assert not verify_checkpoint(cp, KEYS)
    assert not verify_checkpoint(series(1)[0], {})


@pytest.mark.parametrize(("field", "value"), [
    ("tree_size", -1), ("tree_size", 2**63), ("tree_size", True), ("timestamp", 1.5),
    ("root_hash", b"x" * 31), ("last_hash", "00" * 32), ("previous", b""),
    ("key_id", ""), ("key_id", "a b"), ("key_id", "x\n"), ("key_id", "k" * 129),
    ("key_id", "ключ"),
], ids=lambda v: repr(v)[:20])
def test_body_refuses_bad_fields(field: str, value: object) -> None:
    args: dict[str, Any] = {"tree_size": 7, "root_hash": ROOT, "last_hash": LAST,
                            "timestamp": 1, "previous": GENESIS, "key_id": "audit-1"}
    args[field] = value
    with pytest.raises(CheckpointFormatError):
        checkpoint_body(**args)


def test_json_round_trip() -> None:
    cp = series(2)[1]
    text = to_json(cp)
    assert "\n" not in text and text == cp.to_json()
    assert from_json(text) == cp == Checkpoint.from_json(text.encode())
    assert from_json(json.loads(text)) == cp  # a parsed document (a file the operator keeps)
    assert verify_checkpoint(from_json(text), KEYS)


def _doc(**change: Any) -> str:
    data = json.loads(to_json(series(1)[0]))
    data.update(change)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize("document", [
    "not json", "[]", "{}", _doc(format="bastion-audit-checkpoint/v2"), _doc(extra=1),
    _doc(signature=...), _doc(root_hash="AB" * 32), _doc(root_hash="00" * 31),
    _doc(signature="00" * 63), _doc(tree_size="7"), _doc(tree_size=-1), _doc(timestamp=1.0),
    _doc(key_id=7), _doc(key_id="two words"), _doc(last_hash=None),
    "{" + " " * MAX_DOCUMENT + "}", b"\xff\xfe",
], ids=["not-json", "array", "empty", "other-format", "unknown-key", "missing-key",
        "uppercase-hex", "short-hash", "short-signature", "size-as-string", "negative-size",
        "float-time", "key-id-number", "key-id-space", "null-hash", "oversized",
        "invalid-utf8"])
def test_from_json_refuses(document: str | bytes) -> None:
    with pytest.raises(CheckpointFormatError):
        from_json(document)


def test_chain_of_checkpoints_verifies() -> None:
    assert verify_checkpoint_chain(series(), KEYS) == []
    assert verify_checkpoint_chain(series()[2:], KEYS, first_previous=None) == []


def test_missing_checkpoint_is_a_gap() -> None:
    cps = series()
    faults = verify_checkpoint_chain([cps[0], cps[1], cps[3]], KEYS)
    assert [(f.seq, f.kind) for f in faults] == [(400, "checkpoint_gap")]
    faults = verify_checkpoint_chain(cps[1:], KEYS)
    assert [(f.seq, f.kind) for f in faults] == [(200, "checkpoint_gap")]


def test_replaced_checkpoint_is_found() -> None:
    cps = series()
    swapped = sign_checkpoint(KEY, "audit-1", 200, ROOT, LAST, cps[1].timestamp,
                              cps[1].previous)
    faults = verify_checkpoint_chain([cps[0], swapped, cps[2]], KEYS)
    assert [(f.seq, f.kind) for f in faults] == [(300, "checkpoint_gap")]


def test_rollback_and_fork() -> None:
    cps = series(2)
    back = sign_checkpoint(KEY, "audit-1", 150, ROOT, LAST, cps[1].timestamp + 1,
                           checkpoint_hash(cps[1]))
    fork = sign_checkpoint(KEY, "audit-1", 200, ROOT, LAST, cps[1].timestamp + 1,
                           checkpoint_hash(cps[1]))
    assert [(f.seq, f.kind) for f in verify_checkpoint_chain([*cps, back], KEYS)] == \
        [(150, "checkpoint_rollback")]
    assert [(f.seq, f.kind) for f in verify_checkpoint_chain([*cps, fork], KEYS)] == \
        [(200, "checkpoint_mismatch")]


def test_bad_signature_in_a_series() -> None:
    cps = series(3)
    cps[1] = dataclasses.replace(cps[1], signature=bytes(64))
    faults = verify_checkpoint_chain(cps, KEYS)
    assert [(f.seq, f.kind) for f in faults] == [(200, "bad_signature")]
