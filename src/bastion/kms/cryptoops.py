"""Cryptographic operations (AWS KMS API Reference): Encrypt, Decrypt, ReEncrypt,
GenerateDataKey(+WithoutPlaintext), GenerateDataKeyPair(+WithoutPlaintext), GenerateRandom,
Sign, Verify, GetPublicKey, GenerateMac, VerifyMac.

Symmetric ciphertexts are :mod:`bastion.kms.ciphertext` envelopes: sealed under the key's
newest version, opened with the version they name. Every failure to open one (parse, tag,
unknown key or version, wrong context) is the same ``InvalidCiphertextException``.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag

from bastion.kms import ciphertext as envelope
from bastion.kms import crypto
from bastion.kms import fields as f
from bastion.kms.context import canonical, condition_keys, parse_context
from bastion.kms.core import Call
from bastion.kms.errors import (
    DryRunOperationException,
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    KMSInvalidMacException,
    KMSInvalidSignatureException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from bastion.kms.store import KeyRecord

MAX_PLAINTEXT = 4096
DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}


def _invalid() -> InvalidCiphertextException:
    return InvalidCiphertextException("The ciphertext is invalid, or the key or encryption "
                                      "context is not the one it was encrypted with.")


def _dry_run(call: Call) -> None:
    if f.boolean(call.request, "DryRun"):
        raise DryRunOperationException("The request would have succeeded, but the DryRun "
                                       "flag is set.")


async def _target(call: Call, field: str = "KeyId") -> tuple[KeyRecord, dict[str, Any]]:
    """The key a request names (aliases allowed) and the ``kms:RequestAlias`` condition."""
    ref = f.required_string(call.request, field, max_len=2048)
    rec, alias = await call.core.resolve(ref, aliases=True)
    call.resources.append(call.core.key_arn(rec.id))
    return rec, ({"kms:RequestAlias": alias} if alias else {})


def _needs_usage(call: Call, rec: KeyRecord, usage: str, what: str) -> None:
    if rec.usage != usage:
        raise InvalidKeyUsageException(f"{call.core.key_arn(rec.id)} key usage is "
                                       f"{rec.usage} which is not valid for {what}.")


def _algorithm(call: Call, rec: KeyRecord, alg: str, allowed: list[str]) -> None:
    if alg not in allowed:
        raise InvalidKeyUsageException(f"Algorithm {alg} is incompatible with key spec "
                                       f"{rec.spec}.")


# --- sealing and opening --------------------------------------------------------------------
async def seal(call: Call, rec: KeyRecord, plaintext: bytes, context: dict[str, str],
               alg: str) -> bytes:
    if alg != crypto.SYMMETRIC:
        if context:
            raise ValidationException("EncryptionContext is not supported with asymmetric "
                                      "keys")
        if len(plaintext) > crypto.rsa_max_plaintext(rec.spec, alg):
            raise ValidationException(f"Plaintext is too long for {rec.spec} with {alg}")
        material = await call.core.material(rec, rec.current_version)
        return crypto.rsa_encrypt(material, alg, plaintext)
    number = rec.current_version
    material = await call.core.material(rec, number)
    assert material.aead is not None
    head = envelope.header(rec.id, number)
    nonce = os.urandom(envelope.NONCE_BYTES)
    return envelope.pack(head, nonce, material.aead.encrypt(nonce, plaintext,
                                                            head + canonical(context)))


async def _locate(call: Call, blob: bytes, ref: str | None,
                  alg: str) -> tuple[KeyRecord, envelope.Envelope | None, dict[str, Any]]:
    """The key that must open ``blob``: the one the blob names (symmetric), checked against
    the one given (IncorrectKeyException), or the given one (asymmetric)."""
    core = call.core
    given: KeyRecord | None = None
    extra: dict[str, Any] = {}
    if ref is not None:
        given, alias = await core.resolve(ref, aliases=True)
        if alias:
            extra["kms:RequestAlias"] = alias
    if alg != crypto.SYMMETRIC:
        if given is None:
            raise ValidationException("KeyId is required to decrypt with an asymmetric key")
        return given, None, extra
    env = envelope.parse(blob)
    if given is not None and given.id != env.key_id:
        raise IncorrectKeyException("The key ID in the request does not identify a KMS key "
                                    "that can perform this operation.")
    rec = given or await core.key(env.key_id)
    if rec is None:
        raise _invalid()
    return rec, env, extra


async def unseal(call: Call, rec: KeyRecord, env: envelope.Envelope | None, blob: bytes,
                 context: dict[str, str], alg: str) -> bytes:
    if env is None:
        _needs_usage(call, rec, "ENCRYPT_DECRYPT", "Decrypt")
        _algorithm(call, rec, alg, crypto.encryption_algorithms(rec.spec, rec.usage))
        if context:
            raise ValidationException("EncryptionContext is not supported with asymmetric "
                                      "keys")
        material = await call.core.material(rec, rec.current_version)
        out = crypto.rsa_decrypt(material, alg, blob)
        if out is None:
            raise _invalid()
        return out
    if rec.spec != crypto.SYMMETRIC or env.version > rec.current_version:
        raise _invalid()
    try:
        material = await call.core.material(rec, env.version)
    except NotFoundException:
        raise _invalid() from None
    assert material.aead is not None
    try:
        return material.aead.decrypt(env.nonce, env.body, env.header + canonical(context))
    except InvalidTag:
        raise _invalid() from None


# --- Encrypt / Decrypt / ReEncrypt ----------------------------------------------------------
async def encrypt(call: Call) -> dict[str, Any]:
    req = call.request
    plaintext = f.required_blob(req, "Plaintext", max_len=MAX_PLAINTEXT)
    context = parse_context(req.get("EncryptionContext"))
    alg = f.enum(req, "EncryptionAlgorithm", crypto.ALL_ENCRYPTION, default=crypto.SYMMETRIC)
    assert alg is not None
    f.grant_tokens(req)
    rec, extra = await _target(call)
    call.params.update(encryptionContext=context, encryptionAlgorithm=alg)
    extra.update(condition_keys(context), **{"kms:EncryptionAlgorithm": alg})
    await call.core.authorize(call, "Encrypt", rec, extra, context=context)
    call.core.usable(rec)
    _needs_usage(call, rec, "ENCRYPT_DECRYPT", "Encrypt")
    _algorithm(call, rec, alg, crypto.encryption_algorithms(rec.spec, rec.usage))
    _dry_run(call)
    blob = await seal(call, rec, plaintext, context, alg)
    return {"CiphertextBlob": f.b64(blob), "KeyId": call.core.key_arn(rec.id),
            "EncryptionAlgorithm": alg}


async def decrypt(call: Call) -> dict[str, Any]:
    req = call.request
    blob = f.required_blob(req, "CiphertextBlob", max_len=envelope.MAX_BLOB)
    context = parse_context(req.get("EncryptionContext"))
    ref = f.string(req, "KeyId", max_len=2048)
    alg = f.enum(req, "EncryptionAlgorithm", crypto.ALL_ENCRYPTION, default=crypto.SYMMETRIC)
    assert alg is not None
    f.grant_tokens(req)
    if req.get("Recipient") is not None:
        raise UnsupportedOperationException("Recipient (attested enclaves) is not supported")
    call.params.update(encryptionContext=context, encryptionAlgorithm=alg)
    rec, env, extra = await _locate(call, blob, ref, alg)
    call.resources.append(call.core.key_arn(rec.id))
    extra.update(condition_keys(context), **{"kms:EncryptionAlgorithm": alg})
    await call.core.authorize(call, "Decrypt", rec, extra, context=context)
    call.core.usable(rec)
    _dry_run(call)
    plaintext = await unseal(call, rec, env, blob, context, alg)
    return {"KeyId": call.core.key_arn(rec.id), "Plaintext": f.b64(plaintext),
            "EncryptionAlgorithm": alg}


async def re_encrypt(call: Call) -> dict[str, Any]:
    req, core = call.request, call.core
    blob = f.required_blob(req, "CiphertextBlob", max_len=envelope.MAX_BLOB)
    src_ctx = parse_context(req.get("SourceEncryptionContext"), "SourceEncryptionContext")
    dst_ctx = parse_context(req.get("DestinationEncryptionContext"),
                            "DestinationEncryptionContext")
    src_ref = f.string(req, "SourceKeyId", max_len=2048)
    src_alg = f.enum(req, "SourceEncryptionAlgorithm", crypto.ALL_ENCRYPTION,
                     default=crypto.SYMMETRIC)
    dst_alg = f.enum(req, "DestinationEncryptionAlgorithm", crypto.ALL_ENCRYPTION,
                     default=crypto.SYMMETRIC)
    assert src_alg is not None and dst_alg is not None
    f.grant_tokens(req)
    dst, dst_extra = await _target(call, "DestinationKeyId")
    call.params.update(sourceEncryptionContext=src_ctx, destinationEncryptionContext=dst_ctx)
    src, env, src_extra = await _locate(call, blob, src_ref, src_alg)
    call.resources.append(core.key_arn(src.id))
    src_extra.update(condition_keys(src_ctx), **{"kms:ReEncryptOnSameKey": src.id == dst.id})
    await core.authorize(call, "ReEncryptFrom", src, src_extra, context=src_ctx)
    dst_extra.update(condition_keys(dst_ctx), **{"kms:ReEncryptOnSameKey": src.id == dst.id})
    await core.authorize(call, "ReEncryptTo", dst, dst_extra, context=dst_ctx)
    core.usable(src)
    core.usable(dst)
    _needs_usage(call, dst, "ENCRYPT_DECRYPT", "ReEncrypt")
    _algorithm(call, dst, dst_alg, crypto.encryption_algorithms(dst.spec, dst.usage))
    _dry_run(call)
    plaintext = await unseal(call, src, env, blob, src_ctx, src_alg)
    out = await seal(call, dst, plaintext, dst_ctx, dst_alg)
    return {"CiphertextBlob": f.b64(out), "SourceKeyId": core.key_arn(src.id),
            "KeyId": core.key_arn(dst.id), "SourceEncryptionAlgorithm": src_alg,
            "DestinationEncryptionAlgorithm": dst_alg}


# --- data keys ------------------------------------------------------------------------------
async def _data_key(call: Call, action: str, plaintext_out: bool) -> dict[str, Any]:
    req = call.request
    context = parse_context(req.get("EncryptionContext"))
    spec = f.enum(req, "KeySpec", tuple(DATA_KEY_SPECS))
    count = f.integer(req, "NumberOfBytes", 1, 1024)
    if (spec is None) == (count is None):
        raise ValidationException("Specify either KeySpec or NumberOfBytes, not both "
                                  "and not neither")
    size = DATA_KEY_SPECS[spec] if spec is not None else count
    assert size is not None
    f.grant_tokens(req)
    if req.get("Recipient") is not None:
        raise UnsupportedOperationException("Recipient (attested enclaves) is not supported")
    rec, extra = await _target(call)
    call.params.update(encryptionContext=context, keySpec=spec, numberOfBytes=count)
    extra.update(condition_keys(context))
    await call.core.authorize(call, action, rec, extra, context=context)
    call.core.usable(rec)
    _needs_usage(call, rec, "ENCRYPT_DECRYPT", action)
    if rec.spec != crypto.SYMMETRIC:
        raise InvalidKeyUsageException(f"{call.core.key_arn(rec.id)} is not a symmetric key")
    _dry_run(call)
    data_key = os.urandom(size)
    blob = await seal(call, rec, data_key, context, crypto.SYMMETRIC)
    out = {"CiphertextBlob": f.b64(blob), "KeyId": call.core.key_arn(rec.id)}
    if plaintext_out:
        out["Plaintext"] = f.b64(data_key)
    return out


async def generate_data_key(call: Call) -> dict[str, Any]:
    return await _data_key(call, "GenerateDataKey", True)


async def generate_data_key_without_plaintext(call: Call) -> dict[str, Any]:
    return await _data_key(call, "GenerateDataKeyWithoutPlaintext", False)


async def _data_key_pair(call: Call, action: str, plaintext_out: bool) -> dict[str, Any]:
    req = call.request
    pair_spec = f.enum(req, "KeyPairSpec", crypto.KEY_PAIR_SPECS, required=True)
    assert pair_spec is not None
    context = parse_context(req.get("EncryptionContext"))
    f.grant_tokens(req)
    if req.get("Recipient") is not None:
        raise UnsupportedOperationException("Recipient (attested enclaves) is not supported")
    rec, extra = await _target(call)
    call.params.update(encryptionContext=context, keyPairSpec=pair_spec)
    extra.update(condition_keys(context))
    await call.core.authorize(call, action, rec, extra, context=context)
    call.core.usable(rec)
    _needs_usage(call, rec, "ENCRYPT_DECRYPT", action)
    if rec.spec != crypto.SYMMETRIC:
        raise InvalidKeyUsageException(f"{call.core.key_arn(rec.id)} is not a symmetric key")
    _dry_run(call)
    private, public = crypto.generate_pair(pair_spec)
    blob = await seal(call, rec, private, context, crypto.SYMMETRIC)
    out = {"PrivateKeyCiphertextBlob": f.b64(blob), "PublicKey": f.b64(public),
           "KeyId": call.core.key_arn(rec.id), "KeyPairSpec": pair_spec}
    if plaintext_out:
        out["PrivateKeyPlaintext"] = f.b64(private)
    return out


async def generate_data_key_pair(call: Call) -> dict[str, Any]:
    return await _data_key_pair(call, "GenerateDataKeyPair", True)


async def generate_data_key_pair_without_plaintext(call: Call) -> dict[str, Any]:
    return await _data_key_pair(call, "GenerateDataKeyPairWithoutPlaintext", False)


async def generate_random(call: Call) -> dict[str, Any]:
    count = f.integer(call.request, "NumberOfBytes", 1, 1024, required=True)
    assert count is not None
    if f.string(call.request, "CustomKeyStoreId", max_len=64) is not None:
        raise UnsupportedOperationException("custom key stores are not supported")
    if call.request.get("Recipient") is not None:
        raise UnsupportedOperationException("Recipient (attested enclaves) is not supported")
    call.params["numberOfBytes"] = count
    await call.core.authorize(call, "GenerateRandom", None)
    return {"Plaintext": f.b64(os.urandom(count))}


# --- signatures and MACs --------------------------------------------------------------------
async def _signing(call: Call, action: str) -> tuple[KeyRecord, str, bytes, bool]:
    req = call.request
    message = f.required_blob(req, "Message", max_len=4096)
    kind = f.enum(req, "MessageType", ("RAW", "DIGEST", "EXTERNAL_MU"), default="RAW")
    alg = f.enum(req, "SigningAlgorithm", crypto.ALL_SIGNING, required=True)
    assert alg is not None
    f.grant_tokens(req)
    rec, extra = await _target(call)
    call.params.update(messageType=kind, signingAlgorithm=alg)
    extra.update({"kms:SigningAlgorithm": alg, "kms:MessageType": kind})
    await call.core.authorize(call, action, rec, extra)
    call.core.usable(rec)
    _needs_usage(call, rec, "SIGN_VERIFY", action)
    _algorithm(call, rec, alg, crypto.signing_algorithms(rec.spec, rec.usage))
    if kind == "EXTERNAL_MU":
        raise UnsupportedOperationException("MessageType EXTERNAL_MU is for ML-DSA keys")
    digest = kind == "DIGEST"
    if digest and len(message) != crypto.digest_size(alg):
        raise ValidationException(f"Digest is invalid length for algorithm {alg}.")
    _dry_run(call)
    return rec, alg, message, digest


async def sign(call: Call) -> dict[str, Any]:
    rec, alg, message, digest = await _signing(call, "Sign")
    material = await call.core.material(rec, rec.current_version)
    signature = crypto.sign(material, alg, message, digest)
    return {"KeyId": call.core.key_arn(rec.id), "Signature": f.b64(signature),
            "SigningAlgorithm": alg}


async def verify(call: Call) -> dict[str, Any]:
    signature = f.required_blob(call.request, "Signature", max_len=6144)
    rec, alg, message, digest = await _signing(call, "Verify")
    material = await call.core.material(rec, rec.current_version)
    if not crypto.verify(material, alg, message, digest, signature):
        raise KMSInvalidSignatureException("The signature is not valid.")
    return {"KeyId": call.core.key_arn(rec.id), "SignatureValid": True,
            "SigningAlgorithm": alg}


async def get_public_key(call: Call) -> dict[str, Any]:
    rec, extra = await _target(call)
    f.grant_tokens(call.request)
    await call.core.authorize(call, "GetPublicKey", rec, extra)
    call.core.usable(rec)
    if rec.spec == crypto.SYMMETRIC or rec.spec in crypto.HMAC_BYTES:
        raise UnsupportedOperationException(f"{call.core.key_arn(rec.id)} key type does not "
                                            "have a public key")
    material = await call.core.material(rec, rec.current_version)
    out: dict[str, Any] = {"KeyId": call.core.key_arn(rec.id),
                           "PublicKey": f.b64(crypto.public_der(material)),
                           "CustomerMasterKeySpec": rec.spec, "KeySpec": rec.spec,
                           "KeyUsage": rec.usage}
    if rec.usage == "ENCRYPT_DECRYPT":
        out["EncryptionAlgorithms"] = crypto.encryption_algorithms(rec.spec, rec.usage)
    else:
        out["SigningAlgorithms"] = crypto.signing_algorithms(rec.spec, rec.usage)
    return out


async def _mac(call: Call, action: str) -> tuple[KeyRecord, str, bytes]:
    req = call.request
    message = f.required_blob(req, "Message", max_len=4096)
    alg = f.enum(req, "MacAlgorithm", crypto.ALL_MAC, required=True)
    assert alg is not None
    f.grant_tokens(req)
    rec, extra = await _target(call)
    call.params["macAlgorithm"] = alg
    extra["kms:MacAlgorithm"] = alg
    await call.core.authorize(call, action, rec, extra)
    call.core.usable(rec)
    _needs_usage(call, rec, "GENERATE_VERIFY_MAC", action)
    _algorithm(call, rec, alg, crypto.mac_algorithms(rec.spec))
    _dry_run(call)
    return rec, alg, message


async def generate_mac(call: Call) -> dict[str, Any]:
    rec, alg, message = await _mac(call, "GenerateMac")
    material = await call.core.material(rec, rec.current_version)
    return {"Mac": f.b64(crypto.mac(material, alg, message)), "MacAlgorithm": alg,
            "KeyId": call.core.key_arn(rec.id)}


async def verify_mac(call: Call) -> dict[str, Any]:
    given = f.required_blob(call.request, "Mac", max_len=6144)
    rec, alg, message = await _mac(call, "VerifyMac")
    material = await call.core.material(rec, rec.current_version)
    if not crypto.mac_equal(crypto.mac(material, alg, message), given):
        raise KMSInvalidMacException("The MAC is not valid.")
    return {"KeyId": call.core.key_arn(rec.id), "MacValid": True, "MacAlgorithm": alg}
