"""The CA's one refusal type."""

from __future__ import annotations

CODES = ("badCSR", "rejectedIdentifier", "notFound", "alreadyRevoked", "invalidRequest",
         "unavailable")


class PkiError(Exception):
    """A refusal by the internal CA. ``code`` is one of :data:`CODES` (ACME's error types
    where one fits); ``str(exc)`` is safe to show to the requester."""

    def __init__(self, code: str, message: str) -> None:
        assert code in CODES, code
        super().__init__(message)
        self.code = code
