"""Key management. Today: a local key-encryption key in the data dir wraps every stored
secret (signing keys, TOTP seeds, the client-secret pepper). The HSM-backed KMS replaces the
backend behind the same ``KeyWrapper`` interface."""

from bastion.kms.keyfile import KeyWrapper, UnwrapError, load_or_create_kek

__all__ = ["KeyWrapper", "UnwrapError", "load_or_create_kek"]
