"""Local key-encryption key (KEK): 256 random bits in ``<data_dir>/kek.key``, mode 0600.

Wrapping is AES-256-GCM (``cryptography``'s AEAD recipe) with a random 96-bit nonce and the
purpose as associated data, so a value wrapped for one purpose cannot be replayed as another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEK_FILE = "kek.key"
_VERSION = b"\x01"


class UnwrapError(Exception):
    """A wrapped value could not be opened (wrong key, wrong purpose or tampered)."""


class KeyWrapper:
    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ValueError("KEK must be 32 bytes")
        self._aead = AESGCM(kek)
        # a separate subkey for keyed hashes (client secrets), never used for encryption
        self._mac_key = hmac.new(kek, b"bastion/mac-key/v1", hashlib.sha256).digest()

    @property
    def wrapped_by(self) -> str:
        """What wraps new values, for log messages."""
        return f"the key-encryption key ({KEK_FILE})"

    def wrap(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def unwrap(self, blob: bytes, purpose: str) -> bytes:
        if len(blob) < 29 or blob[:1] != _VERSION:
            raise UnwrapError("malformed wrapped value")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], purpose.encode())
        except InvalidTag:
            raise UnwrapError("cannot unwrap") from None

    def keyed_hash(self, value: str, purpose: str) -> str:
        """HMAC-SHA-256 of a high-entropy secret (client secrets): hex digest."""
        return hmac.new(self._mac_key, purpose.encode() + b"\x00" + value.encode(),
                        hashlib.sha256).hexdigest()


def load_or_create_kek(data_dir: Path) -> KeyWrapper:
    """Read the KEK, creating it (and the data dir, 0700) on first use."""
    return KeyWrapper(read_or_create_kek(data_dir))


def read_or_create_kek(data_dir: Path) -> bytes:
    """The KEK's 32 bytes, creating it (and the data dir, 0700) on first use."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEK_FILE
    if not path.exists():
        # write a temp file, then link it into place: atomic, and never half-written
        tmp = data_dir / f".{KEK_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(os.urandom(32)) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use theirs
        finally:
            tmp.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} must not be readable by group or others (mode {mode:o})")
    return base64.b64decode(path.read_bytes().strip(), validate=True)
