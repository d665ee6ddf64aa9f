"""Envelope encryption of streams of any size (``bastion kms encrypt-file``/``decrypt-file``):
one data key per file from GenerateDataKey, then the data in authenticated chunks.

The construction is the STREAM online AE of Hoang, Reyhanitabar, Rogaway and Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance" (CRYPTO 2015, §7),
over AES-256-GCM, with the file header bound to every chunk (as the AWS Encryption SDK's
message format binds its header, "Message format reference")::

    header  = "BKMF" || u8 version (1) || u32 chunk_size || prefix (7 random bytes)
              || u16 len || key ARN || u32 len || canonical encryption context
              || u16 len || wrapped data key (a KMS ciphertext blob)
              || header tag (16: GCM over no plaintext, AAD = all the bytes above,
                 nonce = prefix || 0xFFFFFFFF || 0x02)
    chunk i = AES-256-GCM(data key, nonce = prefix || u32 i || final,
                          AAD = SHA-256(header) || u64 i || final)(plaintext_i)

Every chunk holds ``chunk_size`` plaintext bytes except the last (0 to ``chunk_size``),
whose ``final`` byte is 1; there is always a last chunk, so an empty file has one. Hence a
truncation (the last chunk is missing or cut), an appended or dropped or reordered chunk,
a chunk from another file (another header hash, and another data key), and a changed header
(its tag, then every chunk's AAD) all fail to authenticate. The key ARN and the context in
the header are also checked by KMS when it unwraps the data key: the data key is wrapped
with the same encryption context.

Memory is bounded by two chunks and one output buffer whatever the size of the data; the
header's sizes are capped before anything is allocated. Decrypted plaintext is written as
it is authenticated, chunk by chunk: :func:`atomic_output` keeps it under a temporary name
and renames it only after the last chunk verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.kms.context import MAX_CONTEXT_BYTES, MAX_PAIRS, canonical

__all__ = ["DEFAULT_CHUNK", "Header", "StreamError", "TamperedError", "atomic_output",
           "decrypt_stream", "encrypt_stream", "fresh_target", "read_header"]

MAGIC = b"BKMF"
VERSION = 1
DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 1 << 10
MAX_CHUNK = 1 << 24
TAG = 16
PREFIX = 7
MAX_KEY_ID = 2048
MAX_WRAPPED = 6144
MAX_CHUNKS = 0xFFFFFFFF  # index 0xFFFFFFFF is the header tag's nonce
_MAX_CONTEXT_ENCODED = 4 + MAX_CONTEXT_BYTES + 8 * MAX_PAIRS
_FIXED = struct.Struct(">4sBI7s")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_AAD_TAIL = struct.Struct(">QB")
_NONCE_TAIL = struct.Struct(">IB")
Progress = Callable[[int], None]


class StreamError(Exception):
    """The input is not a Bastion encrypted file, or cannot be written (a clear message,
    never a key or plaintext)."""


class TamperedError(StreamError):
    """Any authentication failure: one opaque error (truncated, reordered, swapped,
    flipped or a changed header all look the same)."""

    def __init__(self) -> None:
        super().__init__("the encrypted data is truncated, reordered or was tampered with")


@dataclass(frozen=True)
class Header:
    key_id: str
    context: dict[str, str]
    wrapped_key: bytes
    chunk_size: int
    prefix: bytes
    body: bytes  # the encoded header without its tag
    tag: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.body + self.tag).digest()


def _nonce(prefix: bytes, index: int, final: int) -> bytes:
    return prefix + _NONCE_TAIL.pack(index, final)


def _header_nonce(prefix: bytes) -> bytes:
    return _nonce(prefix, MAX_CHUNKS, 2)


def _encode(key_id: str, context: Mapping[str, str], wrapped: bytes, chunk_size: int,
            prefix: bytes) -> bytes:
    kid = key_id.encode()
    ctx = canonical(context)
    if not 0 < len(kid) <= MAX_KEY_ID or not 0 < len(wrapped) <= MAX_WRAPPED:
        raise StreamError("the key id or wrapped data key has an invalid length")
    return b"".join((_FIXED.pack(MAGIC, VERSION, chunk_size, prefix), _U16.pack(len(kid)),
                     kid, _U32.pack(len(ctx)), ctx, _U16.pack(len(wrapped)), wrapped))


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    while data is not None and len(data) < n:
        more = src.read(n - len(data))
        if not more:
            break
        data += more
    if data is None or len(data) != n:
        raise StreamError("not a Bastion encrypted file (the header is cut short)")
    return data


def _parse_context(raw: bytes) -> dict[str, str]:
    """Decode the canonical encoding; anything but the canonical bytes of a map is refused
    (so the encoding stays injective)."""
    try:
        (count,) = _U32.unpack_from(raw, 0)
        pos, out = 4, {}
        if count > MAX_PAIRS:
            raise ValueError
        for _ in range(count):
            fields = []
            for _ in range(2):
                (n,) = _U32.unpack_from(raw, pos)
                if pos + 4 + n > len(raw):
                    raise ValueError
                fields.append(raw[pos + 4:pos + 4 + n].decode())
                pos += 4 + n
            out[fields[0]] = fields[1]
        if pos != len(raw) or canonical(out) != raw:
            raise ValueError
    except (ValueError, struct.error, UnicodeDecodeError):
        raise StreamError("not a Bastion encrypted file (malformed encryption context)") \
            from None
    return out


def read_header(src: BinaryIO) -> Header:
    """Read and parse the header (sizes capped before reading); its tag is checked by
    :func:`decrypt_stream`, once the data key is unwrapped."""
    magic, version, chunk_size, prefix = _FIXED.unpack(_read_exact(src, _FIXED.size))
    if magic != MAGIC:
        raise StreamError("not a Bastion encrypted file")
    if version != VERSION:
        raise StreamError(f"unsupported encrypted file format version {version}")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise StreamError("not a Bastion encrypted file (invalid chunk size)")
    (n,) = _U16.unpack(_read_exact(src, 2))
    if not 0 < n <= MAX_KEY_ID:
        raise StreamError("not a Bastion encrypted file (invalid key id)")
    try:
        key_id = _read_exact(src, n).decode()
    except UnicodeDecodeError:
        raise StreamError("not a Bastion encrypted file (invalid key id)") from None
    (n,) = _U32.unpack(_read_exact(src, 4))
    if not 4 <= n <= _MAX_CONTEXT_ENCODED:
        raise StreamError("not a Bastion encrypted file (malformed encryption context)")
    context = _parse_context(_read_exact(src, n))
    (n,) = _U16.unpack(_read_exact(src, 2))
    if not 0 < n <= MAX_WRAPPED:
        raise StreamError("not a Bastion encrypted file (invalid wrapped data key)")
    wrapped = _read_exact(src, n)
    tag = _read_exact(src, TAG)
    body = _encode(key_id, context, wrapped, chunk_size, prefix)
    return Header(key_id, context, wrapped, chunk_size, prefix, body, tag)


def _read_full(src: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` (short only at the end of the stream: pipes return short reads)."""
    got = 0
    while got < len(buf):
        n = src.readinto(buf[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _aead(data_key: bytes) -> AESGCM:
    if len(data_key) != 32:
        raise StreamError("the data key must be 256 bits")
    return AESGCM(data_key)


def encrypt_stream(src: BinaryIO, dst: BinaryIO, *, data_key: bytes, key_id: str,
                   wrapped_key: bytes, context: Mapping[str, str],
                   chunk_size: int = DEFAULT_CHUNK, progress: Progress | None = None) -> int:
    """Write the header then ``src`` in chunks to ``dst``; returns the plaintext size."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise StreamError(f"the chunk size must be {MIN_CHUNK} to {MAX_CHUNK} bytes")
    aead = _aead(data_key)
    prefix = secrets.token_bytes(PREFIX)
    body = _encode(key_id, context, wrapped_key, chunk_size, prefix)
    tag = aead.encrypt(_header_nonce(prefix), b"", body)
    dst.write(body + tag)
    digest = hashlib.sha256(body + tag).digest()
    cur, nxt = memoryview(bytearray(chunk_size)), memoryview(bytearray(chunk_size))
    out = memoryview(bytearray(chunk_size + TAG))
    n, index, total = _read_full(src, cur), 0, 0
    while True:
        m = _read_full(src, nxt) if n == chunk_size else 0
        final = int(m == 0)
        if index >= MAX_CHUNKS:
            raise StreamError("the input is too large for this chunk size")
        aead.encrypt_into(_nonce(prefix, index, final), cur[:n],
                          digest + _AAD_TAIL.pack(index, final), out[:n + TAG])
        dst.write(out[:n + TAG])
        total += n
        if progress is not None:
            progress(n)
        if final:
            return total
        cur, nxt, n, index = nxt, cur, m, index + 1


def decrypt_stream(src: BinaryIO, dst: BinaryIO, header: Header, data_key: bytes, *,
                   progress: Progress | None = None) -> int:
    """Check the header's tag, then authenticate and write each chunk of ``src`` (read
    past the header) to ``dst``; returns the plaintext size. Raises
    :class:`TamperedError` on any failure, after which what ``dst`` got must be discarded."""
    aead = _aead(data_key)
    try:
        aead.decrypt(_header_nonce(header.prefix), header.tag, header.body)
    except InvalidTag:
        raise TamperedError() from None
    digest, size = header.digest, header.chunk_size + TAG
    cur, nxt = memoryview(bytearray(size)), memoryview(bytearray(size))
    out = memoryview(bytearray(header.chunk_size))
    n, index, total = _read_full(src, cur), 0, 0
    while True:
        m = _read_full(src, nxt) if n == size else 0
        final = int(m == 0)
        if n < TAG or index >= MAX_CHUNKS:
            raise TamperedError()
        try:
            aead.decrypt_into(_nonce(header.prefix, index, final), cur[:n],
                              digest + _AAD_TAIL.pack(index, final), out[:n - TAG])
        except InvalidTag:
            raise TamperedError() from None
        dst.write(out[:n - TAG])
        total += n - TAG
        if progress is not None:
            progress(n)
        if final:
            return total
        cur, nxt, n, index = nxt, cur, m, index + 1


def fresh_target(target: Path, source: Path | None, *, force: bool) -> None:
    """Refuse to overwrite an existing file without ``force``, and the input in any case."""
    if source is not None and target.exists() and source.exists() \
            and os.path.samefile(source, target):
        raise StreamError("the output is the input file")
    if target.exists() and not force:
        raise StreamError(f"{target} exists (pass --force to replace it)")
    if target.exists() and not target.is_file():
        raise StreamError(f"{target} is not a regular file")


@contextlib.contextmanager
def atomic_output(target: Path | None) -> Iterator[BinaryIO]:
    """``target`` written as a whole or not at all: the data goes to a 0600 temporary file
    next to it, flushed to disk and renamed over ``target`` only when the block ends
    without an exception (else deleted). ``None`` or ``-`` is standard output, which
    cannot be taken back: a failure there is reported by the exit status."""
    if target is None or str(target) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.",
                               suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
