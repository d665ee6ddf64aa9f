"""AWS KMS errors as the wire carries them (AWS KMS API Reference, "Common Errors" and each
operation's "Errors"): ``code`` is the JSON 1.1 ``__type``, ``message`` a sentence that never
holds plaintext, key material or a ciphertext, ``status`` the HTTP status."""

from __future__ import annotations


class KMSError(Exception):
    """Base of every error an operation raises; the wire layer renders it as
    ``{"__type": code, "message": message}`` with ``status``."""

    code = "KMSInternalException"
    status = 400

    def __init__(self, message: str = "", *, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


class ValidationException(KMSError):
    """The input fails to satisfy the constraints of the operation."""

    code = "ValidationException"


class NotFoundException(KMSError):
    """The specified entity or resource could not be found."""

    code = "NotFoundException"


class DisabledException(KMSError):
    """The specified KMS key is not enabled."""

    code = "DisabledException"


class KMSInvalidStateException(KMSError):
    """The state of the specified resource is not valid for this request."""

    code = "KMSInvalidStateException"


class AccessDeniedException(KMSError):
    """The caller is not authorized to perform the operation."""

    code = "AccessDeniedException"


class InvalidCiphertextException(KMSError):
    """The ciphertext, encryption context or key is wrong: one opaque error, no oracle."""

    code = "InvalidCiphertextException"


class IncorrectKeyException(KMSError):
    """The KMS key used to decrypt is not the one given."""

    code = "IncorrectKeyException"


class InvalidKeyUsageException(KMSError):
    """The key's usage or spec does not allow the operation or algorithm."""

    code = "InvalidKeyUsageException"


class KMSInvalidSignatureException(KMSError):
    """The signature verification failed."""

    code = "KMSInvalidSignatureException"


class KMSInvalidMacException(KMSError):
    """The HMAC verification failed."""

    code = "KMSInvalidMacException"


class AlreadyExistsException(KMSError):
    """The resource (an alias) already exists."""

    code = "AlreadyExistsException"


class InvalidAliasNameException(KMSError):
    """The alias name is not valid."""

    code = "InvalidAliasNameException"


class InvalidArnException(KMSError):
    """The ARN is not valid."""

    code = "InvalidArnException"


class InvalidMarkerException(KMSError):
    """The Marker is not one a previous response returned."""

    code = "InvalidMarkerException"


class MalformedPolicyDocumentException(KMSError):
    """The key policy is not a valid policy."""

    code = "MalformedPolicyDocumentException"


class TagException(KMSError):
    """A tag is not valid."""

    code = "TagException"


class LimitExceededException(KMSError):
    """A quota was exceeded."""

    code = "LimitExceededException"


class UnsupportedOperationException(KMSError):
    """The operation is not supported (on this key)."""

    code = "UnsupportedOperationException"


class UnknownOperationException(KMSError):
    """The X-Amz-Target names no operation of the service."""

    code = "UnknownOperationException"


class DryRunOperationException(KMSError):
    """The request would have succeeded (DryRun)."""

    code = "DryRunOperationException"
    status = 412


class KMSInternalException(KMSError):
    """An internal error (the root keeper is unavailable...)."""

    code = "KMSInternalException"
    status = 500
