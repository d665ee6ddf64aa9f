"""Key operations through ``KMS.call`` with AWS semantics: every key spec, states, aliases,
tags, paging, rotation, deletion, data keys, signatures, MACs, and each bad input's AWS
error (which changes nothing)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from bastion.kms.errors import KMSError
from bastion.oauth.provider import Provider
from tests.kms.conftest import admin_caller, b64, unb64

pytestmark = pytest.mark.anyio
DAY_MS = 86_400_000


async def call(p: Provider, op: str, **req: Any) -> dict[str, Any]:
    return await p.kms.call(op, req, admin_caller(p))


async def fails(p: Provider, code: str, op: str, **req: Any) -> KMSError:
    with pytest.raises(KMSError) as info:
        await call(p, op, **req)
    assert info.value.code == code, (info.value.code, info.value.message)
    assert info.value.status == (500 if code == "KMSInternalException" else 400) or \
        code == "DryRunOperationException"
    return info.value


async def new_key(p: Provider, **req: Any) -> str:
    meta = (await call(p, "CreateKey", **req))["KeyMetadata"]
    return str(meta["KeyId"])


# --- keys -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "usage", "algs"), [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", {"EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"]}),
    ("RSA_2048", "ENCRYPT_DECRYPT",
     {"EncryptionAlgorithms": ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]}),
    ("RSA_3072", "SIGN_VERIFY", {"SigningAlgorithms": [
        "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384",
        "RSASSA_PKCS1_V1_5_SHA_512"]}),
    ("ECC_NIST_P256", "SIGN_VERIFY", {"SigningAlgorithms": ["ECDSA_SHA_256"]}),
    ("ECC_NIST_P384", "SIGN_VERIFY", {"SigningAlgorithms": ["ECDSA_SHA_384"]}),
    ("HMAC_256", "GENERATE_VERIFY_MAC", {"MacAlgorithms": ["HMAC_SHA_256"]}),
    ("HMAC_512", "GENERATE_VERIFY_MAC", {"MacAlgorithms": ["HMAC_SHA_512"]}),
], ids=lambda v: v if isinstance(v, str) else "")
async def test_create_and_describe_every_spec(provider, spec, usage, algs):
    meta = (await call(provider, "CreateKey", KeySpec=spec, KeyUsage=usage,
                       Description="d"))["KeyMetadata"]
    assert meta["KeySpec"] == spec and meta["KeyUsage"] == usage
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["Arn"] == f"arn:bastion:kms::000000000000:key/{meta['KeyId']}"
    for name, values in algs.items():
        assert meta[name] == values
    described = (await call(provider, "DescribeKey", KeyId=meta["Arn"]))["KeyMetadata"]
    assert described == meta


async def own_keys(provider) -> set[str]:
    """Bastion's own keys (``alias/bastion/secrets``, made at start: kms/secrets.py)."""
    rows = await provider.fast.all("SELECT key_id FROM kms_aliases WHERE name LIKE "
                                   "'alias/bastion/%'")
    return {str(r[0]) for r in rows}


async def listed_keys(provider, **req: Any) -> list[str]:
    own = await own_keys(provider)
    return [k["KeyId"] for k in (await call(provider, "ListKeys", **req))["Keys"]
            if k["KeyId"] not in own]


@pytest.mark.parametrize(("req", "code"), [
    ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "ENCRYPT_DECRYPT"}, "ValidationException"),
    ({"KeySpec": "HMAC_256"}, "ValidationException"),  # default usage ENCRYPT_DECRYPT
    ({"KeySpec": "AES_256"}, "ValidationException"),
    ({"KeySpec": "ECC_NIST_P521", "KeyUsage": "SIGN_VERIFY"}, "UnsupportedOperationException"),
    ({"KeyUsage": "DECRYPT"}, "ValidationException"),
    ({"Description": "x" * 8193}, "ValidationException"),
    ({"Description": 5}, "ValidationException"),
    ({"Origin": "EXTERNAL"}, "UnsupportedOperationException"),
    ({"MultiRegion": True}, "UnsupportedOperationException"),
    ({"MultiRegion": "yes"}, "ValidationException"),
    ({"Policy": "{not json"}, "MalformedPolicyDocumentException"),
    ({"Policy": json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]})},
     "MalformedPolicyDocumentException"),  # no Principal in a key policy
    ({"Tags": [{"TagKey": "aws:x", "TagValue": "1"}]}, "TagException"),
    ({"Tags": [{"TagKey": "", "TagValue": "1"}]}, "ValidationException"),
    ({"Tags": "a=b"}, "ValidationException"),
], ids=["ecc-encrypt", "hmac-default-usage", "bad-spec", "p521", "bad-usage",
        "long-description", "description-type", "origin", "multi-region", "bool-type",
        "policy-json", "policy-no-principal", "reserved-tag", "empty-tag-key", "tags-type"])
async def test_create_key_bad_input(provider, req, code):
    await fails(provider, code, "CreateKey", **req)
    assert await listed_keys(provider) == []  # nothing was created


async def test_list_keys_pages_with_marker(provider):
    ids = sorted([await new_key(provider) for _ in range(5)])
    seen: list[str] = []
    marker = None
    while True:
        req: dict[str, Any] = {"Limit": 2}
        if marker:
            req["Marker"] = marker
        page = await call(provider, "ListKeys", **req)
        seen += [k["KeyId"] for k in page["Keys"]]
        assert len(page["Keys"]) <= 2
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert [k for k in seen if k not in await own_keys(provider)] == ids
    await fails(provider, "InvalidMarkerException", "ListKeys", Marker="garbage!")
    await fails(provider, "ValidationException", "ListKeys", Limit=0)
    await fails(provider, "ValidationException", "ListKeys", Limit=1001)


@pytest.mark.parametrize("ref", ["nope", "1234", "alias/missing", "arn:aws:kms:::key/x",
                                 "arn:bastion:kms::000000000000:key/"
                                 "00000000-0000-4000-8000-000000000000",
                                 "00000000-0000-4000-8000-000000000000"])
async def test_unknown_key_is_not_found(provider, ref):
    await fails(provider, "NotFoundException", "DescribeKey", KeyId=ref)
    await fails(provider, "NotFoundException", "Encrypt", KeyId=ref, Plaintext=b64(b"x"))


async def test_unknown_operation_and_non_dict_request(provider):
    with pytest.raises(KMSError) as info:
        await provider.kms.call("DeleteEverything", {}, admin_caller(provider))
    assert info.value.code == "UnknownOperationException"
    with pytest.raises(KMSError) as info:
        await provider.kms.call("Encrypt", [], admin_caller(provider))  # type: ignore[arg-type]
    assert info.value.code == "ValidationException"


# --- states ---------------------------------------------------------------------------------
async def test_disable_enable_and_deletion_states(provider):
    key = await new_key(provider)
    blob = (await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"s")))["CiphertextBlob"]
    await call(provider, "DisableKey", KeyId=key)
    meta = (await call(provider, "DescribeKey", KeyId=key))["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and meta["Enabled"] is False
    await fails(provider, "DisabledException", "Encrypt", KeyId=key, Plaintext=b64(b"s"))
    await fails(provider, "DisabledException", "Decrypt", CiphertextBlob=blob)
    await fails(provider, "DisabledException", "GenerateDataKey", KeyId=key, KeySpec="AES_256")
    await call(provider, "EnableKey", KeyId=key)
    assert unb64((await call(provider, "Decrypt", CiphertextBlob=blob))["Plaintext"]) == b"s"

    for days in (6, 31, "7"):
        await fails(provider, "ValidationException", "ScheduleKeyDeletion", KeyId=key,
                    PendingWindowInDays=days)
    out = await call(provider, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    meta = (await call(provider, "DescribeKey", KeyId=key))["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and meta["PendingDeletionWindowInDays"] == 7
    await fails(provider, "KMSInvalidStateException", "Encrypt", KeyId=key,
                Plaintext=b64(b"s"))
    await fails(provider, "KMSInvalidStateException", "Decrypt", CiphertextBlob=blob)
    await fails(provider, "KMSInvalidStateException", "EnableKey", KeyId=key)
    await fails(provider, "KMSInvalidStateException", "ScheduleKeyDeletion", KeyId=key)
    await call(provider, "CancelKeyDeletion", KeyId=key)
    await fails(provider, "KMSInvalidStateException", "CancelKeyDeletion", KeyId=key)
    meta = (await call(provider, "DescribeKey", KeyId=key))["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and "DeletionDate" not in meta
    await call(provider, "EnableKey", KeyId=key)
    assert unb64((await call(provider, "Decrypt", CiphertextBlob=blob))["Plaintext"]) == b"s"


async def test_deletion_completes_and_nothing_decrypts(provider):
    key = await new_key(provider)
    other = await new_key(provider)
    await call(provider, "CreateAlias", AliasName="alias/doomed", TargetKeyId=key)
    await call(provider, "TagResource", KeyId=key, Tags=[{"TagKey": "a", "TagValue": "b"}])
    blob = (await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"s")))["CiphertextBlob"]
    out = await call(provider, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
    assert await provider.kms.purge_deleted() == []  # not due yet
    due = int(out["DeletionDate"] * 1000) + 1
    assert await provider.kms.purge_deleted(now=due) == [key]
    await fails(provider, "NotFoundException", "DescribeKey", KeyId=key)
    await fails(provider, "InvalidCiphertextException", "Decrypt", CiphertextBlob=blob)
    await fails(provider, "NotFoundException", "DescribeKey", KeyId="alias/doomed")
    assert await listed_keys(provider) == [other]
    rows = await provider.fast.all("SELECT count(*) FROM kms_key_versions WHERE key_id = :k",
                                   k=key)
    assert rows[0][0] == 0


# --- aliases and tags -----------------------------------------------------------------------
async def test_aliases(provider):
    a, b = await new_key(provider), await new_key(provider)
    await call(provider, "CreateAlias", AliasName="alias/app", TargetKeyId=a)
    await fails(provider, "AlreadyExistsException", "CreateAlias", AliasName="alias/app",
                TargetKeyId=b)
    for bad in ("app", "alias/", "alias/has space", "alias/" + "x" * 251):
        await fails(provider, "ValidationException", "CreateAlias", AliasName=bad,
                    TargetKeyId=a)
    await fails(provider, "InvalidAliasNameException", "CreateAlias",
                AliasName="alias/aws/s3", TargetKeyId=a)
    await fails(provider, "NotFoundException", "CreateAlias", AliasName="alias/x",
                TargetKeyId="alias/app")  # the target is a key id or ARN
    enc = await call(provider, "Encrypt", KeyId="alias/app", Plaintext=b64(b"v"))
    assert enc["KeyId"].endswith(a)
    arn = "arn:bastion:kms::000000000000:alias/app"
    assert (await call(provider, "DescribeKey", KeyId=arn))["KeyMetadata"]["KeyId"] == a
    await call(provider, "UpdateAlias", AliasName="alias/app", TargetKeyId=b)
    enc2 = await call(provider, "Encrypt", KeyId="alias/app", Plaintext=b64(b"v"))
    assert enc2["KeyId"].endswith(b)
    sign = await new_key(provider, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    await fails(provider, "ValidationException", "UpdateAlias", AliasName="alias/app",
                TargetKeyId=sign)
    listed = [x for x in (await call(provider, "ListAliases"))["Aliases"]
              if not x["AliasName"].startswith("alias/bastion/")]
    assert [(x["AliasName"], x["TargetKeyId"], x["AliasArn"]) for x in listed] == [
        ("alias/app", b, arn)]
    assert (await call(provider, "ListAliases", KeyId=a))["Aliases"] == []
    await call(provider, "DeleteAlias", AliasName="alias/app")
    await fails(provider, "NotFoundException", "DeleteAlias", AliasName="alias/app")
    await fails(provider, "NotFoundException", "Encrypt", KeyId="alias/app",
                Plaintext=b64(b"v"))
    # the old ciphertext still decrypts: aliases never change what a blob names
    assert unb64((await call(provider, "Decrypt", CiphertextBlob=enc["CiphertextBlob"]))
                 ["Plaintext"]) == b"v"


async def test_tags(provider):
    key = await new_key(provider, Tags=[{"TagKey": "team", "TagValue": "core"}])
    await call(provider, "TagResource", KeyId=key, Tags=[
        {"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "sec"}])
    tags = (await call(provider, "ListResourceTags", KeyId=key))["Tags"]
    assert tags == [{"TagKey": "env", "TagValue": "prod"}, {"TagKey": "team", "TagValue": "sec"}]
    page = await call(provider, "ListResourceTags", KeyId=key, Limit=1)
    assert page["Truncated"] and len(page["Tags"]) == 1
    rest = await call(provider, "ListResourceTags", KeyId=key, Marker=page["NextMarker"])
    assert rest["Tags"] == [{"TagKey": "team", "TagValue": "sec"}]
    await call(provider, "UntagResource", KeyId=key, TagKeys=["env"])
    assert [t["TagKey"] for t in (await call(provider, "ListResourceTags",
                                             KeyId=key))["Tags"]] == ["team"]
    await fails(provider, "TagException", "TagResource", KeyId=key,
                Tags=[{"TagKey": "aws:k", "TagValue": "v"}])
    await fails(provider, "ValidationException", "TagResource", KeyId=key,
                Tags=[{"TagKey": "k" * 129, "TagValue": "v"}])
    await fails(provider, "ValidationException", "TagResource", KeyId=key)
    await fails(provider, "TagException", "TagResource", KeyId=key, Tags=[
        {"TagKey": f"k{i}", "TagValue": "v"} for i in range(50)])  # 51 with "team"


# --- encrypt / decrypt / data keys ----------------------------------------------------------
@pytest.mark.parametrize("size", [1, 4096])
async def test_encrypt_decrypt_sizes(provider, size):
    key = await new_key(provider)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    out = await call(provider, "Encrypt", KeyId=key, Plaintext=b64(data),
                     EncryptionContext={"purpose": "test", "ü": "ß"})
    assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = await call(provider, "Decrypt", CiphertextBlob=out["CiphertextBlob"],
                      EncryptionContext={"ü": "ß", "purpose": "test"})
    assert unb64(back["Plaintext"]) == data and back["KeyId"] == out["KeyId"]


@pytest.mark.parametrize(("req", "code"), [
    ({"Plaintext": b64(b"x" * 4097)}, "ValidationException"),
    ({"Plaintext": ""}, "ValidationException"),
    ({"Plaintext": "not base64!"}, "ValidationException"),
    ({"Plaintext": 12}, "ValidationException"),
    ({}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "EncryptionContext": {"a": 1}}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "EncryptionContext": ["a"]}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "EncryptionContext": {"": "v"}}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "EncryptionContext": {"k": "v" * 9000}}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "EncryptionAlgorithm": "AES"}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
     "InvalidKeyUsageException"),
    ({"Plaintext": b64(b"x"), "GrantTokens": "t"}, "ValidationException"),
    ({"Plaintext": b64(b"x"), "DryRun": True}, "DryRunOperationException"),
], ids=["4097-bytes", "empty", "bad-base64", "type", "missing", "context-value-type",
        "context-type", "context-empty-key", "context-too-long", "algorithm-enum",
        "rsa-alg-on-symmetric", "grant-tokens-type", "dry-run"])
async def test_encrypt_bad_input(provider, req, code):
    key = await new_key(provider)
    await fails(provider, code, "Encrypt", KeyId=key, **req)


async def test_encrypt_with_sign_key_and_hmac_key_is_invalid_usage(provider):
    sign = await new_key(provider, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    mac = await new_key(provider, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    for key in (sign, mac):
        await fails(provider, "InvalidKeyUsageException", "Encrypt", KeyId=key,
                    Plaintext=b64(b"x"))
        await fails(provider, "InvalidKeyUsageException", "GenerateDataKey", KeyId=key,
                    KeySpec="AES_256")


async def test_generate_data_keys(provider):
    key = await new_key(provider)
    ctx = {"order": "42"}
    for req, size in (({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16),
                      ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 1024}, 1024)):
        out = await call(provider, "GenerateDataKey", KeyId=key, EncryptionContext=ctx, **req)
        assert len(unb64(out["Plaintext"])) == size
        back = await call(provider, "Decrypt", CiphertextBlob=out["CiphertextBlob"],
                          EncryptionContext=ctx)
        assert back["Plaintext"] == out["Plaintext"]
    out = await call(provider, "GenerateDataKeyWithoutPlaintext", KeyId=key, KeySpec="AES_256")
    assert "Plaintext" not in out
    assert len(unb64((await call(provider, "Decrypt", CiphertextBlob=out["CiphertextBlob"]))
                     ["Plaintext"])) == 32
    for req in ({}, {"KeySpec": "AES_256", "NumberOfBytes": 32}, {"NumberOfBytes": 0},
                {"NumberOfBytes": 1025}, {"KeySpec": "AES_512"}):
        await fails(provider, "ValidationException", "GenerateDataKey", KeyId=key, **req)


@pytest.mark.parametrize("spec", ["ECC_NIST_P256", "RSA_2048"])
async def test_generate_data_key_pair(provider, spec):
    key = await new_key(provider)
    out = await call(provider, "GenerateDataKeyPair", KeyId=key, KeyPairSpec=spec,
                     EncryptionContext={"k": "v"})
    private = serialization.load_der_private_key(unb64(out["PrivateKeyPlaintext"]), None)
    public = serialization.load_der_public_key(unb64(out["PublicKey"]))
    assert private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        unb64(out["PublicKey"]) and public is not None
    back = await call(provider, "Decrypt", CiphertextBlob=out["PrivateKeyCiphertextBlob"],
                      EncryptionContext={"k": "v"})
    assert back["Plaintext"] == out["PrivateKeyPlaintext"]
    bare = await call(provider, "GenerateDataKeyPairWithoutPlaintext", KeyId=key,
                      KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in bare and bare["KeyPairSpec"] == spec
    await fails(provider, "ValidationException", "GenerateDataKeyPair", KeyId=key)


async def test_generate_random(provider):
    a = unb64((await call(provider, "GenerateRandom", NumberOfBytes=32))["Plaintext"])
    b = unb64((await call(provider, "GenerateRandom", NumberOfBytes=32))["Plaintext"])
    assert len(a) == 32 and a != b
    for n in (0, 1025, "8", None):
        await fails(provider, "ValidationException", "GenerateRandom", NumberOfBytes=n)


async def test_re_encrypt_moves_between_keys_and_contexts(provider):
    a, b = await new_key(provider), await new_key(provider)
    blob = (await call(provider, "Encrypt", KeyId=a, Plaintext=b64(b"move me"),
                       EncryptionContext={"x": "1"}))["CiphertextBlob"]
    out = await call(provider, "ReEncrypt", CiphertextBlob=blob, DestinationKeyId=b,
                     SourceEncryptionContext={"x": "1"},
                     DestinationEncryptionContext={"y": "2"})
    assert out["SourceKeyId"].endswith(a) and out["KeyId"].endswith(b)
    back = await call(provider, "Decrypt", CiphertextBlob=out["CiphertextBlob"],
                      EncryptionContext={"y": "2"})
    assert unb64(back["Plaintext"]) == b"move me" and back["KeyId"].endswith(b)
    await fails(provider, "InvalidCiphertextException", "ReEncrypt", CiphertextBlob=blob,
                DestinationKeyId=b)  # source context missing
    await fails(provider, "IncorrectKeyException", "ReEncrypt", CiphertextBlob=blob,
                DestinationKeyId=b, SourceKeyId=b, SourceEncryptionContext={"x": "1"})


async def test_rsa_encryption_key(provider):
    key = await new_key(provider, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    pub = serialization.load_der_public_key(
        unb64((await call(provider, "GetPublicKey", KeyId=key))["PublicKey"]))
    for alg, limit in (("RSAES_OAEP_SHA_256", 190), ("RSAES_OAEP_SHA_1", 214)):
        out = await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"r" * limit),
                         EncryptionAlgorithm=alg)
        back = await call(provider, "Decrypt", KeyId=key, CiphertextBlob=out["CiphertextBlob"],
                          EncryptionAlgorithm=alg)
        assert unb64(back["Plaintext"]) == b"r" * limit
        await fails(provider, "ValidationException", "Encrypt", KeyId=key,
                    Plaintext=b64(b"r" * (limit + 1)), EncryptionAlgorithm=alg)
    # a client encrypting with the public key alone is decrypted by the KMS
    h = hashes.SHA256()
    blob = pub.encrypt(b"from outside", padding.OAEP(padding.MGF1(h), h, None))  # type: ignore[union-attr]
    back = await call(provider, "Decrypt", KeyId=key, CiphertextBlob=b64(blob),
                      EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert unb64(back["Plaintext"]) == b"from outside"
    await fails(provider, "InvalidKeyUsageException", "Encrypt", KeyId=key,
                Plaintext=b64(b"x"))  # SYMMETRIC_DEFAULT with an RSA key
    await fails(provider, "ValidationException", "Decrypt", CiphertextBlob=b64(blob),
                EncryptionAlgorithm="RSAES_OAEP_SHA_256")  # no KeyId
    await fails(provider, "InvalidCiphertextException", "Decrypt", KeyId=key,
                CiphertextBlob=b64(blob[:-1] + bytes([blob[-1] ^ 1])),
                EncryptionAlgorithm="RSAES_OAEP_SHA_256")


# --- signatures -----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "alg"), [
    ("ECC_NIST_P256", "ECDSA_SHA_256"), ("ECC_NIST_P384", "ECDSA_SHA_384"),
    ("RSA_2048", "RSASSA_PSS_SHA_256"), ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_512"),
    ("RSA_2048", "RSASSA_PSS_SHA_384")])
async def test_sign_verify(provider, spec, alg):
    key = await new_key(provider, KeySpec=spec, KeyUsage="SIGN_VERIFY")
    message = b"the message"
    sig = await call(provider, "Sign", KeyId=key, Message=b64(message), SigningAlgorithm=alg)
    assert sig["SigningAlgorithm"] == alg
    ok = await call(provider, "Verify", KeyId=key, Message=b64(message),
                    Signature=sig["Signature"], SigningAlgorithm=alg)
    assert ok["SignatureValid"] is True
    # the public key verifies it outside the KMS (DER SubjectPublicKeyInfo, DER ECDSA)
    pub: Any = serialization.load_der_public_key(
        unb64((await call(provider, "GetPublicKey", KeyId=key))["PublicKey"]))
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]
    if alg.startswith("ECDSA"):
        pub.verify(unb64(sig["Signature"]), message, ec.ECDSA(h))
    elif alg.startswith("RSASSA_PSS"):
        pub.verify(unb64(sig["Signature"]), message, padding.PSS(padding.MGF1(h),
                                                                  h.digest_size), h)
    else:
        pub.verify(unb64(sig["Signature"]), message, padding.PKCS1v15(), h)
    # DIGEST: the caller hashes
    digest = hashlib.new(h.name, message).digest()
    dsig = await call(provider, "Sign", KeyId=key, Message=b64(digest), MessageType="DIGEST",
                      SigningAlgorithm=alg)
    ok = await call(provider, "Verify", KeyId=key, Message=b64(message),
                    Signature=dsig["Signature"], SigningAlgorithm=alg)
    assert ok["SignatureValid"] is True
    bad = bytearray(unb64(sig["Signature"]))
    bad[len(bad) // 2] ^= 1
    await fails(provider, "KMSInvalidSignatureException", "Verify", KeyId=key,
                Message=b64(message), Signature=b64(bytes(bad)), SigningAlgorithm=alg)
    await fails(provider, "KMSInvalidSignatureException", "Verify", KeyId=key,
                Message=b64(b"other message"), Signature=sig["Signature"],
                SigningAlgorithm=alg)
    await fails(provider, "ValidationException", "Sign", KeyId=key, Message=b64(b"short"),
                MessageType="DIGEST", SigningAlgorithm=alg)


async def test_signing_bad_input(provider):
    key = await new_key(provider, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    sym = await new_key(provider)
    await fails(provider, "InvalidKeyUsageException", "Sign", KeyId=key, Message=b64(b"m"),
                SigningAlgorithm="ECDSA_SHA_384")  # wrong curve's algorithm
    await fails(provider, "InvalidKeyUsageException", "Sign", KeyId=sym, Message=b64(b"m"),
                SigningAlgorithm="ECDSA_SHA_256")
    await fails(provider, "ValidationException", "Sign", KeyId=key, Message=b64(b"m"))
    await fails(provider, "ValidationException", "Sign", KeyId=key, Message=b64(b"m" * 4097),
                SigningAlgorithm="ECDSA_SHA_256")
    await fails(provider, "ValidationException", "Sign", KeyId=key, Message=b64(b"m"),
                SigningAlgorithm="ECDSA_SHA_256", MessageType="HASH")
    await fails(provider, "UnsupportedOperationException", "GetPublicKey", KeyId=sym)
    await fails(provider, "InvalidKeyUsageException", "Decrypt", KeyId=key,
                CiphertextBlob=b64(b"x" * 64), EncryptionAlgorithm="RSAES_OAEP_SHA_256")


# --- MACs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "alg", "digest"), [
    ("HMAC_256", "HMAC_SHA_256", hashlib.sha256), ("HMAC_384", "HMAC_SHA_384", hashlib.sha384),
    ("HMAC_512", "HMAC_SHA_512", hashlib.sha512)])
async def test_generate_verify_mac(provider, spec, alg, digest):
    key = await new_key(provider, KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")
    out = await call(provider, "GenerateMac", KeyId=key, Message=b64(b"msg"), MacAlgorithm=alg)
    assert len(unb64(out["Mac"])) == digest().digest_size
    ok = await call(provider, "VerifyMac", KeyId=key, Message=b64(b"msg"), Mac=out["Mac"],
                    MacAlgorithm=alg)
    assert ok["MacValid"] is True
    await fails(provider, "KMSInvalidMacException", "VerifyMac", KeyId=key,
                Message=b64(b"msg!"), Mac=out["Mac"], MacAlgorithm=alg)
    other = "HMAC_SHA_256" if alg != "HMAC_SHA_256" else "HMAC_SHA_512"
    await fails(provider, "InvalidKeyUsageException", "GenerateMac", KeyId=key,
                Message=b64(b"msg"), MacAlgorithm=other)
    # deterministic per key: the same message gives the same MAC; another key another one
    again = await call(provider, "GenerateMac", KeyId=key, Message=b64(b"msg"),
                       MacAlgorithm=alg)
    assert again["Mac"] == out["Mac"]
    key2 = await new_key(provider, KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")
    mac2 = await call(provider, "GenerateMac", KeyId=key2, Message=b64(b"msg"),
                      MacAlgorithm=alg)
    assert not hmac.compare_digest(unb64(mac2["Mac"]), unb64(out["Mac"]))


# --- rotation -------------------------------------------------------------------------------
async def test_rotation_on_demand_and_automatic(provider):
    key = await new_key(provider)
    old = (await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"v1")))["CiphertextBlob"]
    status = await call(provider, "GetKeyRotationStatus", KeyId=key)
    assert status["KeyRotationEnabled"] is False
    for days in (89, 2561, "365"):
        await fails(provider, "ValidationException", "EnableKeyRotation", KeyId=key,
                    RotationPeriodInDays=days)
    await call(provider, "EnableKeyRotation", KeyId=key, RotationPeriodInDays=90)
    status = await call(provider, "GetKeyRotationStatus", KeyId=key)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    await call(provider, "RotateKeyOnDemand", KeyId=key)
    new = (await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"v2")))["CiphertextBlob"]
    assert unb64(new)[17:21] == (2).to_bytes(4, "big")  # new encryptions use version 2
    assert unb64((await call(provider, "Decrypt", CiphertextBlob=old))["Plaintext"]) == b"v1"
    assert unb64((await call(provider, "Decrypt", CiphertextBlob=new))["Plaintext"]) == b"v2"
    assert await provider.kms.rotate_due() == []
    due = int(status["NextRotationDate"] * 1000) + 1
    assert await provider.kms.rotate_due(now=due) == [key]
    rotations = (await call(provider, "ListKeyRotations", KeyId=key))["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "AUTOMATIC"]
    later = await call(provider, "GetKeyRotationStatus", KeyId=key)
    assert later["NextRotationDate"] > status["NextRotationDate"]
    for blob, text in ((old, b"v1"), (new, b"v2")):
        assert unb64((await call(provider, "Decrypt", CiphertextBlob=blob))["Plaintext"]) == text
    await call(provider, "DisableKeyRotation", KeyId=key)
    assert (await call(provider, "GetKeyRotationStatus", KeyId=key))["KeyRotationEnabled"] \
        is False
    asym = await new_key(provider, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    await fails(provider, "UnsupportedOperationException", "EnableKeyRotation", KeyId=asym)
    await fails(provider, "UnsupportedOperationException", "RotateKeyOnDemand", KeyId=asym)
    await call(provider, "DisableKey", KeyId=key)
    await fails(provider, "DisabledException", "RotateKeyOnDemand", KeyId=key)


async def test_management_operations_take_no_alias(provider):
    key = await new_key(provider)
    await call(provider, "CreateAlias", AliasName="alias/m", TargetKeyId=key)
    for op in ("DisableKey", "EnableKeyRotation", "ScheduleKeyDeletion", "TagResource"):
        await fails(provider, "NotFoundException", op, KeyId="alias/m",
                    Tags=[{"TagKey": "a", "TagValue": "b"}] if op == "TagResource" else None)
    assert (await call(provider, "DescribeKey", KeyId=key))["KeyMetadata"]["KeyState"] == \
        "Enabled"


async def test_key_policy_get_put(provider):
    key = await new_key(provider)
    out = await call(provider, "GetKeyPolicy", KeyId=key, PolicyName="default")
    policy = json.loads(out["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": "arn:bastion:iam::000000000000:root"}
    await fails(provider, "NotFoundException", "GetKeyPolicy", KeyId=key, PolicyName="other")
    await fails(provider, "MalformedPolicyDocumentException", "PutKeyPolicy", KeyId=key,
                Policy=json.dumps({"Statement": "x"}))
    await fails(provider, "ValidationException", "PutKeyPolicy", KeyId=key,
                Policy="{" + " " * 32768 + "}")  # AWS: Policy is 1 to 32768 characters
    assert (await call(provider, "GetKeyPolicy", KeyId=key))["Policy"] == out["Policy"]
    assert (await call(provider, "ListKeyPolicies", KeyId=key))["PolicyNames"] == ["default"]


async def test_audit_records_every_call_without_secrets(provider):
    key = await new_key(provider)
    secret = b"top secret plaintext value"
    enc = await call(provider, "Encrypt", KeyId=key, Plaintext=b64(secret),
                     EncryptionContext={"tenant": "acme"})
    dk = await call(provider, "GenerateDataKey", KeyId=key, KeySpec="AES_256")
    await fails(provider, "InvalidCiphertextException", "Decrypt",
                CiphertextBlob=enc["CiphertextBlob"])
    await provider.audit.flush()
    rows = await provider.fast.all("SELECT event_name, body FROM audit_events ORDER BY seq")
    kms_rows = [(r[0], bytes(r[1]).decode()) for r in rows
                if r[0] in ("CreateKey", "Encrypt", "GenerateDataKey", "Decrypt")
                and key in bytes(r[1]).decode()]  # not Bastion's own secrets key
    assert [n for n, _ in kms_rows] == ["CreateKey", "Encrypt", "GenerateDataKey", "Decrypt"]
    for forbidden in (b64(secret), enc["CiphertextBlob"], dk["Plaintext"],
                      dk["CiphertextBlob"], "top secret"):
        assert all(forbidden not in body for _, body in kms_rows)
    encrypt = json.loads(kms_rows[1][1])
    assert encrypt["requestParameters"]["encryptionContext"] == {"tenant": "acme"}
    assert encrypt["resources"][0]["ARN"].endswith(key)
    decrypt = json.loads(kms_rows[3][1])
    assert decrypt["errorCode"] == "InvalidCiphertextException"


async def test_every_key_type_on_both_root_keepers(kp):
    """The same operations with the root in the file keeper and in SoftHSM2."""
    sym = await new_key(kp)
    blob = (await call(kp, "Encrypt", KeyId=sym, Plaintext=b64(b"p")))["CiphertextBlob"]
    await call(kp, "RotateKeyOnDemand", KeyId=sym)
    assert unb64((await call(kp, "Decrypt", CiphertextBlob=blob))["Plaintext"]) == b"p"
    signer = await new_key(kp, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    sig = await call(kp, "Sign", KeyId=signer, Message=b64(b"m"),
                     SigningAlgorithm="ECDSA_SHA_256")
    assert (await call(kp, "Verify", KeyId=signer, Message=b64(b"m"),
                       Signature=sig["Signature"],
                       SigningAlgorithm="ECDSA_SHA_256"))["SignatureValid"]
    mac = await new_key(kp, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    out = await call(kp, "GenerateMac", KeyId=mac, Message=b64(b"m"),
                     MacAlgorithm="HMAC_SHA_256")
    assert (await call(kp, "VerifyMac", KeyId=mac, Message=b64(b"m"), Mac=out["Mac"],
                       MacAlgorithm="HMAC_SHA_256"))["MacValid"]
    rows = await kp.fast.all("SELECT DISTINCT keeper FROM kms_key_versions")
    assert [r[0] for r in rows] == [kp.settings.root_keeper]


async def test_concurrent_rotations_all_land(provider):
    key = await new_key(provider)
    blob = (await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"v1")))["CiphertextBlob"]
    await asyncio.gather(*(call(provider, "RotateKeyOnDemand", KeyId=key) for _ in range(4)))
    rotations = (await call(provider, "ListKeyRotations", KeyId=key))["Rotations"]
    assert len(rotations) == 4
    new = (await call(provider, "Encrypt", KeyId=key, Plaintext=b64(b"v5")))["CiphertextBlob"]
    assert unb64(new)[17:21] == (5).to_bytes(4, "big")
    assert unb64((await call(provider, "Decrypt", CiphertextBlob=blob))["Plaintext"]) == b"v1"


async def test_provider_purge_runs_kms_housekeeping(provider):
    """The background purge job completes due deletions (here: one made due in the DB)."""
    key = await new_key(provider)
    await call(provider, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
    async with provider.fast.transaction() as tx:
        await tx.run("UPDATE kms_keys SET deletion_at = 0 WHERE id = :k", k=key)
    provider.kms.forget(key)
    await provider.purge()
    await fails(provider, "NotFoundException", "DescribeKey", KeyId=key)
