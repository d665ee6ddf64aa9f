"""The ``file`` root keeper: the root is the data dir's key-encryption key
(``kek.key``, 0600, :mod:`bastion.kms.keyfile`), or, when a passphrase is configured, a
separate root in ``kms-root.sealed`` sealed under a key derived from the passphrase with
scrypt (RFC 7914; N=2^17, r=8, p=1, the parameters OWASP's password storage cheat sheet
lists) and AES-256-GCM. Wrapping is the keyfile's AES-256-GCM recipe with the context as
associated data."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bastion.kms.keyfile import KeyWrapper, UnwrapError, load_or_create_kek
from bastion.kms.root import RootUnavailable, RootUnwrapError

SEALED_FILE = "kms-root.sealed"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
_PURPOSE = "kms-root:"


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal(root: bytes, passphrase: str) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    body = AESGCM(key).encrypt(nonce, root, b"bastion/kms-root/v1")
    doc = {"v": 1, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
           "salt": base64.b64encode(salt).decode(), "nonce": base64.b64encode(nonce).decode(),
           "sealed": base64.b64encode(body).decode()}
    return json.dumps(doc).encode() + b"\n"


def unseal(text: bytes, passphrase: str) -> bytes:
    try:
        doc = json.loads(text)
        n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
        if doc.get("v") != 1 or doc.get("kdf") != "scrypt" or not (
                2**14 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("unsupported")
        salt, nonce, body = (base64.b64decode(doc[k], validate=True)
                             for k in ("salt", "nonce", "sealed"))
    except (ValueError, KeyError, TypeError):
        raise RootUnavailable(f"{SEALED_FILE} is not a sealed root key file") from None
    try:
        return AESGCM(_kdf(passphrase, salt, n, r, p)).decrypt(nonce, body,
                                                               b"bastion/kms-root/v1")
    except InvalidTag:
        raise RootUnavailable("wrong root passphrase (the sealed root key does not open)") \
            from None


class FileKeeper:
    name = "file"

    def __init__(self, wrapper: KeyWrapper) -> None:
        self._wrapper = wrapper

    @classmethod
    def open(cls, data_dir: Path, passphrase: str | None = None) -> FileKeeper:
        if passphrase is None:
            return cls(load_or_create_kek(data_dir))
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = data_dir / SEALED_FILE
        if not path.exists():
            tmp = data_dir / f".{SEALED_FILE}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(seal(os.urandom(32), passphrase))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process sealed one first: use theirs
            finally:
                tmp.unlink()
        if path.stat().st_mode & 0o077:
            raise RootUnavailable(f"{path} must not be readable by group or others")
        return cls(KeyWrapper(unseal(path.read_bytes(), passphrase)))

    async def wrap(self, material: bytes, context: str) -> bytes:
        return self._wrapper.wrap(material, _PURPOSE + context)

    async def unwrap(self, blob: bytes, context: str) -> bytes:
        try:
            return self._wrapper.unwrap(blob, _PURPOSE + context)
        except UnwrapError:
            raise RootUnwrapError("the wrapped key material does not open") from None

    async def health(self) -> None:
        probe = os.urandom(16)
        if await self.unwrap(await self.wrap(probe, "health"), "health") != probe:
            raise RootUnavailable("the file root key fails a round trip")

    def close(self) -> None:
        pass
