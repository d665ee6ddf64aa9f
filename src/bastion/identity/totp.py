"""TOTP second factor (RFC 6238) with pyotp; a code is accepted once (replay refused)."""

from __future__ import annotations

import datetime
import hmac

import pyotp

from bastion.store.kv import KV

ISSUER_NAME = "Bastion"


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226 §4 recommends at least 128


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER_NAME)


async def verify_code(secret: str, code: str, user_id: str, kv: KV) -> bool:
    """Accept the current code or the one before/after (clock drift), each only once."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return False
    totp = pyotp.TOTP(secret)
    for offset in (0, -1, 1):
        at = totp.timecode(datetime.datetime.now()) + offset
        if hmac.compare_digest(totp.generate_otp(at), code):
            # RFC 6238 §5.2: the verifier MUST NOT accept the second attempt of a valid OTP
            return await kv.add(f"totp:{user_id}:{at}", b"1", 120)
    return False
