"""The cryptography of KMS keys, as recipes over ``cryptography`` (the only module of the KMS
that touches hazmat): key specs and their algorithms (AWS KMS Developer Guide, "Key spec
reference"), key generation, RSA-OAEP, signatures, HMAC.

Algorithms are an explicit allowlist per key spec; sizes are checked by the caller before
anything here runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SYMMETRIC = "SYMMETRIC_DEFAULT"
RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ECC_NIST_P256": ec.SECP256R1, "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1, "ECC_SECG_P256K1": ec.SECP256K1}
HMAC_BYTES = {"HMAC_224": 28, "HMAC_256": 32, "HMAC_384": 48, "HMAC_512": 64}

#: key spec → the key usages it may have (CreateKey)
KEY_SPECS: dict[str, tuple[str, ...]] = {
    SYMMETRIC: ("ENCRYPT_DECRYPT",),
    "RSA_2048": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
    "RSA_3072": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
    "RSA_4096": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
    "ECC_NIST_P256": ("SIGN_VERIFY",),
    "ECC_NIST_P384": ("SIGN_VERIFY",),
    "HMAC_256": ("GENERATE_VERIFY_MAC",),
    "HMAC_384": ("GENERATE_VERIFY_MAC",),
    "HMAC_512": ("GENERATE_VERIFY_MAC",),
}
#: every spec AWS names (CreateKey refuses the ones above does not hold as unsupported)
ALL_KEY_SPECS = (*KEY_SPECS, "ECC_NIST_P521", "ECC_SECG_P256K1", "HMAC_224", "SM2")
KEY_USAGES = ("ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT")
KEY_PAIR_SPECS = ("RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384",
                  "ECC_NIST_P521", "ECC_SECG_P256K1")

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}
RSA_SIGNING = tuple(f"{p}_{h}" for p in ("RSASSA_PSS", "RSASSA_PKCS1_V1_5")
                    for h in ("SHA_256", "SHA_384", "SHA_512"))
EC_SIGNING = {"ECC_NIST_P256": ("ECDSA_SHA_256",), "ECC_NIST_P384": ("ECDSA_SHA_384",)}
ALL_SIGNING = (*RSA_SIGNING, "ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512", "SM2DSA")
RSA_ENCRYPTION = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256")
ALL_ENCRYPTION = (SYMMETRIC, *RSA_ENCRYPTION, "SM2PKE")
ALL_MAC = ("HMAC_SHA_224", "HMAC_SHA_256", "HMAC_SHA_384", "HMAC_SHA_512")


def encryption_algorithms(spec: str, usage: str) -> list[str]:
    if usage != "ENCRYPT_DECRYPT":
        return []
    return [SYMMETRIC] if spec == SYMMETRIC else list(RSA_ENCRYPTION)


def signing_algorithms(spec: str, usage: str) -> list[str]:
    if usage != "SIGN_VERIFY":
        return []
    return list(RSA_SIGNING) if spec in RSA_BITS else list(EC_SIGNING.get(spec, ()))


def mac_algorithms(spec: str) -> list[str]:
    return [f"HMAC_SHA_{spec[5:]}"] if spec in HMAC_BYTES else []


# --- generation -----------------------------------------------------------------------------
def _private(spec: str) -> Any:
    if spec in RSA_BITS:
        return rsa.generate_private_key(65537, RSA_BITS[spec])
    return ec.generate_private_key(EC_CURVES[spec]())


def _der(private: Any) -> tuple[bytes, bytes]:
    priv = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    pub = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


def generate(spec: str) -> tuple[bytes, bytes | None]:
    """New key material for a key spec: ``(secret, public DER or None)``."""
    if spec == SYMMETRIC:
        return os.urandom(32), None
    if spec in HMAC_BYTES:
        return os.urandom(HMAC_BYTES[spec]), None
    return _der(_private(spec))


def generate_pair(spec: str) -> tuple[bytes, bytes]:
    """A data key pair: PKCS#8 DER private key, SubjectPublicKeyInfo DER public key."""
    return _der(_private(spec))


@dataclass(frozen=True, slots=True)
class Material:
    """Unwrapped key material, ready to use (kept only in the bounded cache)."""

    spec: str
    aead: AESGCM | None = None
    private: Any = None
    secret: bytes = b""


def load(spec: str, secret: bytes) -> Material:
    if spec == SYMMETRIC:
        return Material(spec, aead=AESGCM(secret))
    if spec in HMAC_BYTES:
        return Material(spec, secret=secret)
    return Material(spec, private=serialization.load_der_private_key(secret, None))


# --- operations -----------------------------------------------------------------------------
def rsa_max_plaintext(spec: str, algorithm: str) -> int:
    digest = 20 if algorithm == "RSAES_OAEP_SHA_1" else 32
    return RSA_BITS[spec] // 8 - 2 * digest - 2


def _oaep(algorithm: str) -> padding.OAEP:
    # AWS's RSAES_OAEP_SHA_1 (SHA-1 inside OAEP, where collisions do not matter)
    h: hashes.HashAlgorithm = hashes.SHA1() if algorithm == "RSAES_OAEP_SHA_1" \
        else hashes.SHA256()  # noqa: S303
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def rsa_encrypt(material: Material, algorithm: str, plaintext: bytes) -> bytes:
    out: bytes = material.private.public_key().encrypt(plaintext, _oaep(algorithm))
    return out


def rsa_decrypt(material: Material, algorithm: str, ciphertext: bytes) -> bytes | None:
    try:
        out: bytes = material.private.decrypt(ciphertext, _oaep(algorithm))
        return out
    except ValueError:
        return None


def digest_size(algorithm: str) -> int:
    return _HASHES[algorithm[-7:]]().digest_size


def _sig_args(algorithm: str, digest: bool) -> tuple[hashes.HashAlgorithm, Any]:
    h = _HASHES[algorithm[-7:]]()
    pre: Any = utils.Prehashed(h) if digest else h
    return h, pre


def sign(material: Material, algorithm: str, message: bytes, digest: bool) -> bytes:
    h, pre = _sig_args(algorithm, digest)
    key = material.private
    out: bytes
    if algorithm.startswith("ECDSA"):
        out = key.sign(message, ec.ECDSA(pre))
    elif algorithm.startswith("RSASSA_PSS"):
        out = key.sign(message, padding.PSS(padding.MGF1(h), h.digest_size), pre)
    else:
        out = key.sign(message, padding.PKCS1v15(), pre)
    return out


def verify(material: Material, algorithm: str, message: bytes, digest: bool,
           signature: bytes) -> bool:
    h, pre = _sig_args(algorithm, digest)
    key = material.private.public_key()
    try:
        if algorithm.startswith("ECDSA"):
            key.verify(signature, message, ec.ECDSA(pre))
        elif algorithm.startswith("RSASSA_PSS"):
            key.verify(signature, message, padding.PSS(padding.MGF1(h), h.digest_size), pre)
        else:
            key.verify(signature, message, padding.PKCS1v15(), pre)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_der(material: Material) -> bytes:
    out: bytes = material.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return out


def mac(material: Material, algorithm: str, message: bytes) -> bytes:
    return hmac.new(material.secret, message, getattr(hashlib, "sha" + algorithm[-3:])).digest()


def mac_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
