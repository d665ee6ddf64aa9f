"""Browser state: the login session cookie and the browser binding used for CSRF.

The session cookie holds 256 random bits; the database keeps only its SHA-256. Forms carry a
CSRF token that is an HMAC of the pending request id under a per-browser secret cookie, so a
form posted from another site (or another browser) is refused (RFC 9700 §4.7 / OWASP).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from bastion.store.models import Session

SESSION_COOKIE = "bastion_session"
BROWSER_COOKIE = "bastion_browser"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def cookie_name(base: str, secure: bool) -> str:
    # "__Host-" cookies are only sent over HTTPS, to this host, for path "/"
    return f"__Host-{base}" if secure else base


def set_cookie(response: Response, name: str, value: str, *, secure: bool,
               max_age: int | None) -> None:
    response.set_cookie(cookie_name(name, secure), value, max_age=max_age, path="/",
                        secure=secure, httponly=True, samesite="lax")


def read_cookie(request: Request, name: str, secure: bool) -> str | None:
    value = request.cookies.get(cookie_name(name, secure))
    if value is None or not 20 <= len(value) <= 100:
        return None
    return value


async def create_session(db: AsyncSession, user_id: str, amr: list[str], ttl: int
                         ) -> tuple[str, Session]:
    raw = secrets.token_urlsafe(32)
    now = int(time.time())
    row = Session(id_hash=_hash(raw), sid=secrets.token_urlsafe(16), user_id=user_id,
                  auth_time=now, amr=amr, expires_at=now + ttl)
    db.add(row)
    await db.flush()
    return raw, row


async def load_session(db: AsyncSession, raw: str | None) -> Session | None:
    if raw is None:
        return None
    row = await db.scalar(select(Session).where(Session.id_hash == _hash(raw)))
    if row is None or row.expires_at <= int(time.time()):
        return None
    return row


async def end_session(db: AsyncSession, sid: str) -> None:
    await db.execute(delete(Session).where(Session.sid == sid))


def browser_id(request: Request, secure: bool) -> tuple[str, bool]:
    """The browser's binding secret, and whether it must be (re)set on the response."""
    existing = read_cookie(request, BROWSER_COOKIE, secure)
    if existing:
        return existing, False
    return secrets.token_urlsafe(32), True


