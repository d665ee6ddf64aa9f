"""The ciphertext blob of symmetric KMS keys: a versioned binary envelope that names the key
and the key version that sealed it.

    0      1            17          21       33
    | 0x01 | key id (16) | version u32 | nonce (12) | AES-256-GCM ciphertext || tag (16) |

The 21-byte header and the canonical encryption context (:mod:`bastion.kms.context`) are the
GCM associated data: changing any header bit, the context, the nonce or the body makes the
tag fail. Parsing errors and tag failures are one opaque ``InvalidCiphertextException``.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from bastion.kms.errors import InvalidCiphertextException

FORMAT = 0x01
HEADER = struct.Struct(">B16sI")
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_BLOB = HEADER.size + NONCE_BYTES + TAG_BYTES
MAX_BLOB = 6144  # AWS: CiphertextBlob is 1 to 6144 bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    key_id: str
    version: int
    header: bytes
    nonce: bytes
    body: bytes  # ciphertext || tag


def header(key_id: str, version: int) -> bytes:
    return HEADER.pack(FORMAT, uuid.UUID(key_id).bytes, version)


def pack(head: bytes, nonce: bytes, body: bytes) -> bytes:
    return head + nonce + body


def parse(blob: bytes) -> Envelope:
    """Split a blob; ``InvalidCiphertextException`` when it cannot be one of ours."""
    if not MIN_BLOB <= len(blob) <= MAX_BLOB or blob[0] != FORMAT:
        raise InvalidCiphertextException("the ciphertext is not valid")
    _, raw_id, version = HEADER.unpack_from(blob)
    if version < 1:
        raise InvalidCiphertextException("the ciphertext is not valid")
    head = blob[:HEADER.size]
    nonce = blob[HEADER.size:HEADER.size + NONCE_BYTES]
    return Envelope(str(uuid.UUID(bytes=raw_id)), version, head, nonce,
                    blob[HEADER.size + NONCE_BYTES:])
