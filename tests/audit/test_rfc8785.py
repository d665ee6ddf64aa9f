"""RFC 8785 canonical record bytes: the RFC's vectors, the fast path equal to the reference on
any JSON value, and a verifier written independently (below, from the RFC's text) that
reproduces every stored body and hash of a real trail. Trails written before (ASCII-escaped
bodies) still verify: verify hashes the stored bytes and never re-encodes them."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit.record import build_record
from bastion.audit.rfc8785 import canonical_bytes, canonicalize
from bastion.audit.trail import search_columns

pytestmark = pytest.mark.anyio

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rfc8785" /
                      "appendix-b-and-sorting.json").read_text())


@pytest.mark.parametrize("bits, text", VECTORS["numbers"],
                         ids=[f"appendix-b-{h}" for h, _ in VECTORS["numbers"]])
def test_appendix_b_numbers(bits: str, text: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonicalize(value) == text.encode()
    assert canonical_bytes([value]) == f"[{text}]".encode()


def test_section_3_2_3_sorts_by_utf16_code_units() -> None:
    """U+1F600 sorts before U+FB33 by UTF-16 code units (a surrogate pair starts with
    0xD83D), after it by code point: orjson's order would differ."""
    data = canonical_bytes(VECTORS["section-3.2.3-sorting"]["input"])
    assert list(json.loads(data)) == VECTORS["section-3.2.3-sorting"]["keys_in_order"]
    assert data == canonicalize(VECTORS["section-3.2.3-sorting"]["input"])


@pytest.mark.parametrize("value, error", [
    (float("nan"), ValueError), (float("inf"), ValueError), (2 ** 53 + 1, ValueError),
    ("\ud800", ValueError), ({1: "x"}, TypeError), ({"x": object()}, TypeError),
], ids=["nan", "infinity", "unsafe-integer", "lone-surrogate", "int-key", "object"])
def test_what_jcs_cannot_hold_is_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        canonical_bytes(value)
    with pytest.raises(error):
        canonicalize(value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 53 - 1), 2 ** 53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_fast_path_is_the_reference(value: Any) -> None:
    assert canonical_bytes(value) == canonicalize(value)
    assert canonicalize(json.loads(canonicalize(value))) == canonicalize(value)


# --- an independent verifier -------------------------------------------------------------------

def tiny_jcs(value: Any) -> bytes:
    """RFC 8785 from its text, for what records hold, sharing no code with Bastion."""
    def enc(v: Any) -> str:
        if v is None or isinstance(v, bool):
            return {None: "null", True: "true", False: "false"}[v]
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):  # records hold floats like 0.25 and 86400.0
            assert 1e-4 <= abs(v) < 1e16 or v == 0, v
            return str(int(v)) if v.is_integer() else repr(v)
        if isinstance(v, str):
            out = ['"']
            for ch in v:
                code = ord(ch)
                if ch in '"\\':
                    out.append("\\" + ch)
                elif ch in "\b\f\n\r\t":
                    out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                                "\t": "\\t"}[ch])
                elif code < 0x20:
                    out.append(f"\\u{code:04x}")
                else:
                    out.append(ch)
            return "".join(out) + '"'
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        keys = sorted(v, key=lambda k: [u for u in k.encode("utf-16-be")])
        return "{" + ",".join(enc(k) + ":" + enc(v[k]) for k in keys) + "}"
    return enc(value).encode("utf-8")


HOSTILE_FIELDS: dict[str, dict[str, Any]] = {
    "non-ascii": {"request_parameters": {"item": "thé 🍵 чай", "rtl": "\u202eabc"}},
    "emoji-and-private-use-keys": {"request_parameters": {"\U0001f600": 1, "\ufb33": 2,
                                                          "\ue000": 3, "a": 4}},
    "control-characters": {"user_agent": "a\nb\rc\x00d\u2028e\x7f\x1b[31m"},
    "numbers": {"request_parameters": {"f": 0.25, "whole": 86400.0, "neg": -7, "big": 2 ** 60,
                                       "max": 2 ** 53 - 1}},
    "escapes": {"error_message": '"quoted" \\ back\tslash'},
}


async def test_an_independent_verifier_reproduces_every_stored_body_and_hash(provider):
    for fields in HOSTILE_FIELDS.values():
        await provider.audit.emit("GetOrder", **fields)
    rows = await provider.fast.all("SELECT seq, body, hash FROM audit_events ORDER BY seq")
    prev = bytes(32)
    for row in rows:
        body, stored_hash = bytes(row[1]), bytes(row[2])
        again = tiny_jcs(json.loads(body))
        assert again == body, (again[:200], body[:200])
        assert hashlib.sha256(b"\x00" + prev + again).digest() == stored_hash
        prev = stored_hash
    assert (await provider.notary.verify()).ok


async def test_bodies_written_before_jcs_still_verify(provider):
    """Bodies of the earlier encoder (ASCII only, non-ASCII as \\uXXXX) are in existing
    trails; verify hashes what is stored, so they verify, columns included."""
    await provider.audit.emit("GetOrder", request_parameters={"orderId": "new"})
    record = build_record("GetOrder", request_parameters={"item": "thé 🍵", "f": 1.0},
                          request_id="legacy")
    legacy = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                        allow_nan=False).encode()
    assert legacy != canonical_bytes(record) and legacy.isascii()
    async with provider.fast.transaction() as tx:
        await provider.audit._link_and_insert(tx, [search_columns(legacy, record)])
    await provider.audit.emit("GetOrder", request_parameters={"orderId": "after"})
    await provider.notary.checkpoint()
    report = await provider.notary.verify()
    assert report.ok, report.faults
