"""Password hashing with argon2id at OWASP's parameters (19 MiB, t=2, p=1), and the rules
for new passwords.

Verification runs in a worker thread (it takes tens of milliseconds by design) so that the
event loop keeps serving. Unknown users are checked against a dummy hash, so the answer takes
as long as for a known user with a wrong password.

New passwords (NIST SP 800-63B §3.1.1.2, OWASP ASVS 4.0.3 V2.1): at least
``MIN_PASSWORD_CHARS`` characters (Unicode code points), up to 1024 bytes (so 64 characters
and more are always accepted), any characters, no composition rules, not the username, and
not on the breached-password list (``data/common-passwords.txt.gz``), case-insensitively.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet: argon2id, m=19456 KiB, t=2, p=1
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16)
_DUMMY = _HASHER.hash("bastion-dummy-password-for-timing")
MAX_PASSWORD_BYTES = 1024
# ASVS 4.0.3 V2.1.1: at least 12 (SP 800-63B asks 8, or 15 for single-factor use); one rule
# for every account, administrators included
MIN_PASSWORD_CHARS = 12
BREACHED_LIST = Path(__file__).parent / "data" / "common-passwords.txt.gz"


class WeakPassword(ValueError):
    """A new password breaks the rules; the message says which (never the password)."""


@functools.cache
def _breached() -> frozenset[str]:
    with gzip.open(BREACHED_LIST, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip().casefold() for line in fh if line.strip())


def check_new_password(password: str, *, username: str | None = None) -> None:
    """Raise ``WeakPassword`` unless ``password`` may be set."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise WeakPassword(f"the password must be at most {MAX_PASSWORD_BYTES} bytes")
    folded = password.casefold()
    if username is not None and folded == username.casefold():
        raise WeakPassword("the password must not be the username")
    if folded in _breached():
        raise WeakPassword("the password is on the list of breached passwords; choose another")


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

