"""Key management: the root keeper, KMS keys and their AWS KMS API. Bastion's own secrets
are wrapped through the hierarchy behind the ``KeyWrapper`` interface
(:class:`bastion.kms.secrets.SecretWrapper`); ``KeyWrapper`` itself is the data dir's
key-encryption key, which still opens values wrapped before and keys one-way hashes."""

from bastion.kms.keyfile import KeyWrapper, UnwrapError, load_or_create_kek

__all__ = ["KeyWrapper", "UnwrapError", "load_or_create_kek"]
