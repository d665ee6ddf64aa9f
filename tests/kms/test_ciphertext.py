"""The ciphertext blob and the encryption context: every region of a blob, flipped or cut,
is InvalidCiphertextException; a blob for another key is IncorrectKeyException when a key is
given; the context's canonical encoding is injective."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from bastion.kms import ciphertext
from bastion.kms.context import canonical, parse_context
from bastion.kms.errors import KMSError
from tests.kms.conftest import admin_caller, b64, unb64

pytestmark = pytest.mark.anyio
CTX = {"tenant": "acme", "purpose": "test"}


async def setup(p: Any) -> tuple[str, bytes]:
    c = admin_caller(p)
    key = (await p.kms.call("CreateKey", {}, c))["KeyMetadata"]["KeyId"]
    out = await p.kms.call("Encrypt", {"KeyId": key, "Plaintext": b64(b"secret data"),
                                       "EncryptionContext": CTX}, c)
    return key, unb64(out["CiphertextBlob"])


async def decrypt_error(p: Any, blob: bytes, **req: Any) -> str:
    req.setdefault("EncryptionContext", CTX)
    with pytest.raises(KMSError) as info:
        await p.kms.call("Decrypt", {"CiphertextBlob": b64(blob), **req}, admin_caller(p))
    assert "secret" not in info.value.message
    return info.value.code


# offsets: format 0, key id 1-16, version 17-20, nonce 21-32, body 33.., tag last 16
REGIONS = {"format": 0, "key-id-first": 1, "key-id-last": 16, "version-high": 17,
           "version-low": 20, "nonce-first": 21, "nonce-last": 32, "body-first": 33,
           "tag-first": -16, "tag-last": -1}


@pytest.mark.parametrize("offset", list(REGIONS.values()), ids=list(REGIONS))
@pytest.mark.parametrize("bit", [0, 7])
async def test_any_flipped_bit_is_invalid_ciphertext(provider, offset, bit):
    _, blob = await setup(provider)
    bad = bytearray(blob)
    bad[offset] ^= 1 << bit
    assert await decrypt_error(provider, bytes(bad)) == "InvalidCiphertextException"


@pytest.mark.parametrize("length", [1, 20, 21, 32, 33, 48, -1])
async def test_truncated_blob_is_invalid_ciphertext(provider, length):
    _, blob = await setup(provider)
    assert await decrypt_error(provider, blob[:length]) == "InvalidCiphertextException"


async def test_appended_byte_is_invalid_ciphertext(provider):
    _, blob = await setup(provider)
    assert await decrypt_error(provider, blob + b"\x00") == "InvalidCiphertextException"


@pytest.mark.parametrize("context", [
    {}, {"tenant": "acme"}, {"tenant": "acme", "purpose": "test", "extra": ""},
    {"tenant": "ACME", "purpose": "test"}, {"Tenant": "acme", "purpose": "test"},
    {"tenantpurpose": "acmetest"},
], ids=["missing", "pair-missing", "pair-added", "value-case", "key-case", "joined"])
async def test_wrong_encryption_context(provider, context):
    _, blob = await setup(provider)
    assert await decrypt_error(provider, blob, EncryptionContext=context) == \
        "InvalidCiphertextException"


async def test_blob_of_another_key(provider):
    key, blob = await setup(provider)
    other, _ = await setup(provider)
    assert await decrypt_error(provider, blob, KeyId=other) == "IncorrectKeyException"
    # the right key given by id, ARN or alias works
    c = admin_caller(provider)
    await provider.kms.call("CreateAlias", {"AliasName": "alias/right", "TargetKeyId": key}, c)
    for ref in (key, f"arn:bastion:kms::000000000000:key/{key}", "alias/right"):
        out = await provider.kms.call("Decrypt", {"CiphertextBlob": b64(blob), "KeyId": ref,
                                                  "EncryptionContext": CTX}, c)
        assert unb64(out["Plaintext"]) == b"secret data"
    # the other key's id written into the header (a forged blob) does not open
    forged = blob[:1] + uuid.UUID(other).bytes + blob[17:]
    assert await decrypt_error(provider, forged) == "InvalidCiphertextException"
    # a header naming a key that does not exist
    unknown = blob[:1] + uuid.uuid4().bytes + blob[17:]
    assert await decrypt_error(provider, unknown) == "InvalidCiphertextException"


async def test_version_not_yet_created_is_invalid(provider):
    _, blob = await setup(provider)
    later = blob[:17] + (2).to_bytes(4, "big") + blob[21:]
    zero = blob[:17] + (0).to_bytes(4, "big") + blob[21:]
    for bad in (later, zero):
        assert await decrypt_error(provider, bad) == "InvalidCiphertextException"


def test_parse_names_key_and_version():
    key = str(uuid.uuid4())
    head = ciphertext.header(key, 7)
    env = ciphertext.parse(ciphertext.pack(head, b"n" * 12, b"b" * 20))
    assert (env.key_id, env.version, env.nonce, env.body) == (key, 7, b"n" * 12, b"b" * 20)
    with pytest.raises(KMSError):
        ciphertext.parse(b"\x02" + head[1:] + b"n" * 12 + b"b" * 20)
    with pytest.raises(KMSError):
        ciphertext.parse(head + b"n" * 12 + b"b" * 6200)


@pytest.mark.parametrize(("a", "b"), [
    ({"a": "bc"}, {"ab": "c"}),
    ({"a": "b", "c": "d"}, {"a": "b\x00c\x00d"}),
    ({}, {"k": ""}),
    ({"a": "1", "b": "2"}, {"a": "2", "b": "1"}),
    ({"\x00\x00\x00\x01": "x"}, {"\x00": "\x00\x00x"}),
], ids=["boundary-shift", "separator-smuggling", "empty-vs-empty-value", "swap-values",
        "length-bytes"])
def test_canonical_context_is_injective(a, b):
    assert canonical(a) != canonical(b)


def test_canonical_context_ignores_order():
    assert canonical({"a": "1", "b": "2"}) == canonical({"b": "2", "a": "1"})
    assert canonical(parse_context(None)) == canonical({})
