"""kms/stream.py: envelope encryption of streams in authenticated chunks, with data keys
from the real KMS (file root keeper, SQLite). Every way of cutting, reordering, swapping or
changing an encrypted file is a case, and each is refused."""

from __future__ import annotations

import io
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.kms.errors import KMSError
from bastion.kms.stream import (
    MAX_CHUNK,
    MIN_CHUNK,
    TAG,
    StreamError,
    TamperedError,
    atomic_output,
    decrypt_stream,
    encrypt_stream,
    read_header,
)
from bastion.oauth.provider import Provider
from bastion.runtime import open_provider
from tests.conftest import make_settings
from tests.kms.conftest import admin_caller, b64, unb64

pytestmark = pytest.mark.anyio
CHUNK = MIN_CHUNK
CONTEXT = {"app": "backup", "file": "db.dump"}


@pytest.fixture
async def kms(tmp_path: Path) -> AsyncIterator[Provider]:
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'kms.db'}")
    p = await open_provider(settings)
    try:
        yield p
    finally:
        await p.close()


async def new_key(p: Provider) -> str:
    out = await p.kms.call("CreateKey", {}, admin_caller(p))
    key: str = out["KeyMetadata"]["KeyId"]
    return key


async def seal(p: Provider, key: str, data: bytes, context: dict[str, str] | None = None,
               chunk: int = CHUNK) -> bytes:
    ctx = CONTEXT if context is None else context
    request: dict[str, Any] = {"KeyId": key, "KeySpec": "AES_256"}
    if ctx:
        request["EncryptionContext"] = ctx
    dk = await p.kms.call("GenerateDataKey", request, admin_caller(p))
    dst = io.BytesIO()
    size = encrypt_stream(io.BytesIO(data), dst, data_key=unb64(dk["Plaintext"]),
                          key_id=dk["KeyId"], wrapped_key=unb64(dk["CiphertextBlob"]),
                          context=ctx, chunk_size=chunk)
    assert size == len(data)
    return dst.getvalue()


async def unseal(p: Provider, blob: bytes, key: str | None = None) -> bytes:
    src = io.BytesIO(blob)
    header = read_header(src)
    request: dict[str, Any] = {"CiphertextBlob": b64(header.wrapped_key)}
    if header.context:
        request["EncryptionContext"] = header.context
    if key:
        request["KeyId"] = key
    dk = await p.kms.call("Decrypt", request, admin_caller(p))
    dst = io.BytesIO()
    size = decrypt_stream(src, dst, header, unb64(dk["Plaintext"]))
    assert size == len(dst.getvalue())
    return dst.getvalue()


def header_len(blob: bytes) -> int:
    src = io.BytesIO(blob)
    read_header(src)
    return src.tell()


@pytest.mark.parametrize("size", [
    pytest.param(0, id="empty"), pytest.param(1, id="1-byte"),
    pytest.param(CHUNK - 1, id="chunk-minus-1"), pytest.param(CHUNK, id="one-chunk"),
    pytest.param(CHUNK + 1, id="chunk-plus-1"), pytest.param(4 * CHUNK, id="4-chunks-exact"),
    pytest.param(7 * CHUNK + 333, id="7-chunks-and-a-bit")])
async def test_round_trip_sizes(kms: Provider, size: int):
    key = await new_key(kms)
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    blob = await seal(kms, key, data)
    chunks = max(1, -(-size // CHUNK))  # the last chunk is final, full or not; 0 B: one
    assert len(blob) == header_len(blob) + size + chunks * TAG
    assert data == await unseal(kms, blob, key)


async def test_no_context_and_default_chunk(kms: Provider):
    key = await new_key(kms)
    data = bytes(range(256)) * 4096 * 2  # 2 MiB: two full default chunks
    blob = await seal(kms, key, data, context={}, chunk=1 << 20)
    assert read_header(io.BytesIO(blob)).context == {}
    assert await unseal(kms, blob) == data


async def test_pipes_that_return_short_reads(kms: Provider):
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data, self.pos = data, 0

        def readable(self) -> bool:
            return True

        def readinto(self, buf: Any) -> int:
            n = min(len(buf), 100, len(self.data) - self.pos)
            buf[:n] = self.data[self.pos:self.pos + n]
            self.pos += n
            return n

    key = await new_key(kms)
    data = b"abc" * 3000
    dk = await kms.kms.call("GenerateDataKey", {"KeyId": key, "KeySpec": "AES_256"},
                            admin_caller(kms))
    dst = io.BytesIO()
    encrypt_stream(Trickle(data), dst, data_key=unb64(dk["Plaintext"]),  # type: ignore[arg-type]
                   key_id=dk["KeyId"], wrapped_key=unb64(dk["CiphertextBlob"]), context={},
                   chunk_size=CHUNK)
    blob = dst.getvalue()
    src = Trickle(blob)
    header = read_header(src)  # type: ignore[arg-type]
    out = io.BytesIO()
    decrypt_stream(src, out, header, unb64(dk["Plaintext"]))  # type: ignore[arg-type]
    assert out.getvalue() == data


# --- tampering ------------------------------------------------------------------------------
def flip(pos: Callable[[bytes, int], int]) -> Callable[[bytes, int], bytes]:
    def change(blob: bytes, h: int) -> bytes:
        b = bytearray(blob)
        b[pos(blob, h)] ^= 0x01
        return bytes(b)
    return change


def chunk(blob: bytes, h: int, i: int) -> bytes:
    return blob[h + i * (CHUNK + TAG):h + (i + 1) * (CHUNK + TAG)]


def swap(blob: bytes, h: int, i: int, j: int) -> bytes:
    parts = [chunk(blob, h, k) for k in range(4)]
    parts[i], parts[j] = parts[j], parts[i]
    return blob[:h] + b"".join(parts)


def set_context_value(blob: bytes, h: int) -> bytes:
    return blob.replace(b"backup", b"backuq", 1)  # still a canonical context


def set_chunk_size(blob: bytes, h: int) -> bytes:
    return blob[:5] + struct.pack(">I", 2 * CHUNK) + blob[9:]


def set_key_id(blob: bytes, h: int) -> bytes:
    start = blob.index(b":key/") + 5
    b = bytearray(blob)
    b[start] = ord("0") if b[start] != ord("0") else ord("1")
    return bytes(b)


def wrapped_at(blob: bytes, h: int) -> int:
    return h - TAG - 10  # inside the wrapped data key (the last field before the tag)


# The file: a header then 4 chunks (3 full, the last 100 bytes).
TAMPERING = [
    pytest.param(lambda b, h: b[:-1], TamperedError, id="last-chunk-cut-by-1-byte"),
    pytest.param(lambda b, h: b[:-(100 + TAG)], TamperedError, id="last-chunk-dropped"),
    pytest.param(lambda b, h: b[:h + CHUNK + TAG], TamperedError, id="cut-after-chunk-0"),
    pytest.param(lambda b, h: b[:h + 5], TamperedError, id="cut-inside-chunk-0"),
    pytest.param(lambda b, h: b[:h], TamperedError, id="header-only"),
    pytest.param(lambda b, h: b + b"\0", TamperedError, id="one-byte-appended"),
    pytest.param(lambda b, h: b + chunk(b, h, 3), TamperedError, id="last-chunk-repeated"),
    pytest.param(lambda b, h: swap(b, h, 0, 1), TamperedError, id="chunks-0-1-swapped"),
    pytest.param(lambda b, h: b[:h] + chunk(b, h, 0) * 2 + b[h + 2 * (CHUNK + TAG):],
                 TamperedError, id="chunk-0-replayed-as-1"),
    pytest.param(lambda b, h: b[:h] + b[h + CHUNK + TAG:], TamperedError, id="chunk-0-dropped"),
    pytest.param(flip(lambda b, h: h + 10), TamperedError, id="bit-in-chunk-0"),
    pytest.param(flip(lambda b, h: h + CHUNK + 3), TamperedError, id="bit-in-chunk-0-tag"),
    pytest.param(flip(lambda b, h: len(b) - 1), TamperedError, id="bit-in-last-tag"),
    pytest.param(flip(lambda b, h: h - 1), TamperedError, id="bit-in-header-tag"),
    pytest.param(flip(lambda b, h: 10), TamperedError, id="bit-in-nonce-prefix"),
    pytest.param(set_chunk_size, TamperedError, id="chunk-size-changed"),
    pytest.param(set_key_id, TamperedError, id="key-id-changed"),
    pytest.param(set_context_value, KMSError, id="context-changed"),
    pytest.param(flip(wrapped_at), KMSError, id="bit-in-wrapped-data-key"),
    pytest.param(flip(lambda b, h: 0), StreamError, id="magic-changed"),
    pytest.param(lambda b, h: b[:4] + b"\x02" + b[5:], StreamError, id="unknown-version"),
    pytest.param(lambda b, h: b[:5] + struct.pack(">I", MAX_CHUNK + 1) + b[9:], StreamError,
                 id="oversized-chunk-size"),
    pytest.param(lambda b, h: b[:30], StreamError, id="header-cut-short"),
    pytest.param(lambda b, h: b"", StreamError, id="empty-input"),
]


@pytest.mark.parametrize("tamper, error", TAMPERING)
async def test_tampering_is_detected(kms: Provider, tamper: Callable[[bytes, int], bytes],
                                     error: type[Exception]):
    key = await new_key(kms)
    data = bytes(i % 256 for i in range(3 * CHUNK + 100))
    blob = await seal(kms, key, data)
    assert await unseal(kms, blob) == data
    bad = tamper(blob, header_len(blob))
    assert bad != blob
    with pytest.raises(error) as caught:
        await unseal(kms, bad)
    if error is KMSError:
        assert caught.value.code == "InvalidCiphertextException"  # type: ignore[attr-defined]


async def test_chunks_and_headers_do_not_move_between_files(kms: Provider):
    """Same key, same context, same sizes: still another header, so another AAD."""
    key = await new_key(kms)
    a_data, b_data = b"A" * (2 * CHUNK + 9), b"B" * (2 * CHUNK + 9)
    a, b = await seal(kms, key, a_data), await seal(kms, key, b_data)
    h = header_len(a)
    assert h == header_len(b)
    for bad in (a[:h] + b[h:],                                   # A's header, B's chunks
                a[:h] + chunk(b, h, 0) + a[h + CHUNK + TAG:],    # B's chunk 0 in A
                a[:h + CHUNK + TAG] + b[h + CHUNK + TAG:]):      # B's tail on A
        with pytest.raises(TamperedError):
            await unseal(kms, bad)


async def test_same_data_key_twice_still_binds_each_file(kms: Provider):
    """Even with one data key reused by a caller, the random prefix separates the files."""
    key = await new_key(kms)
    dk = await kms.kms.call("GenerateDataKey", {"KeyId": key, "KeySpec": "AES_256"},
                            admin_caller(kms))
    outs = []
    for fill in (b"x", b"y"):
        dst = io.BytesIO()
        encrypt_stream(io.BytesIO(fill * (2 * CHUNK)), dst, data_key=unb64(dk["Plaintext"]),
                       key_id=dk["KeyId"], wrapped_key=unb64(dk["CiphertextBlob"]),
                       context={}, chunk_size=CHUNK)
        outs.append(dst.getvalue())
    a, b = outs
    h = header_len(a)
    assert a[:h] != b[:h]
    with pytest.raises(TamperedError):
        await unseal(kms, a[:h] + b[h:])


async def test_wrong_key_disabled_key_and_pending_deletion(kms: Provider):
    key, other = await new_key(kms), await new_key(kms)
    blob = await seal(kms, key, b"secret data")
    with pytest.raises(KMSError) as caught:
        await unseal(kms, blob, key=other)
    assert caught.value.code == "IncorrectKeyException"
    await kms.kms.call("DisableKey", {"KeyId": key}, admin_caller(kms))
    with pytest.raises(KMSError) as caught:
        await unseal(kms, blob)
    assert caught.value.code == "DisabledException"
    with pytest.raises(KMSError) as caught:
        await seal(kms, key, b"more")
    assert caught.value.code == "DisabledException"
    await kms.kms.call("EnableKey", {"KeyId": key}, admin_caller(kms))
    assert await unseal(kms, blob) == b"secret data"
    await kms.kms.call("ScheduleKeyDeletion", {"KeyId": key, "PendingWindowInDays": 7},
                       admin_caller(kms))
    with pytest.raises(KMSError) as caught:
        await unseal(kms, blob)
    assert caught.value.code == "KMSInvalidStateException"


async def test_rotation_keeps_files_decryptable(kms: Provider):
    key = await new_key(kms)
    blob = await seal(kms, key, b"before rotation" * 100)
    await kms.kms.call("RotateKeyOnDemand", {"KeyId": key}, admin_caller(kms))
    assert await unseal(kms, blob) == b"before rotation" * 100


@pytest.mark.parametrize("bad, message", [
    pytest.param(b"\0" * 31, "256 bits", id="short-data-key"),
])
def test_bad_parameters(bad: bytes, message: str):
    with pytest.raises(StreamError, match=message):
        encrypt_stream(io.BytesIO(b""), io.BytesIO(), data_key=bad, key_id="k",
                       wrapped_key=b"w", context={})
    with pytest.raises(StreamError, match="chunk size"):
        encrypt_stream(io.BytesIO(b""), io.BytesIO(), data_key=b"\0" * 32, key_id="k",
                       wrapped_key=b"w", context={}, chunk_size=MIN_CHUNK - 1)


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "plain.txt"
    with pytest.raises(TamperedError), atomic_output(target) as f:
        f.write(b"half of the plaintext")
        raise TamperedError()
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as f:
        f.write(b"all of it")
    assert target.read_bytes() == b"all of it"
    assert [p.name for p in tmp_path.iterdir()] == ["plain.txt"]
    assert target.stat().st_mode & 0o777 == 0o600
