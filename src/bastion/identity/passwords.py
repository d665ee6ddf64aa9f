"""Password hashing with argon2id at OWASP's parameters (19 MiB, t=2, p=1).

Verification runs in a worker thread (it takes tens of milliseconds by design) so that the
event loop keeps serving. Unknown users are checked against a dummy hash, so the answer takes
as long as for a known user with a wrong password.
"""

from __future__ import annotations

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet: argon2id, m=19456 KiB, t=2, p=1
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16)
_DUMMY = _HASHER.hash("bastion-dummy-password-for-timing")
MAX_PASSWORD_BYTES = 1024


def hash_password(password: str) -> str:
    if not password or len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password must be 1..{MAX_PASSWORD_BYTES} bytes")
    return _HASHER.hash(password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True iff ``password`` matches ``stored``; ``stored=None`` burns the same time."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        password = ""
    return await anyio.to_thread.run_sync(_verify, stored, password)

