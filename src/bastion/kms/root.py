"""The root of the key hierarchy: root key (never leaves its keeper) → KMS key versions →
data keys. A root keeper wraps and unwraps KMS key material; the material itself is stored
only wrapped (``kms_key_versions.material``), next to the name of the keeper that wrapped it.

Keepers: ``file`` (:mod:`bastion.kms.filekeeper`, the embedded default) and ``pkcs11``
(:mod:`bastion.kms.pkcs11keeper`, any PKCS#11 HSM). Both fail closed: a keeper that cannot
reach its root raises :class:`RootUnavailable` (KMSInternalException on the wire) and
recovers on a later call once the root is back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bastion.config import Settings


class RootUnavailable(Exception):
    """The root key cannot be used (HSM gone, wrong PIN, wrong passphrase). The message is
    for operators and never holds a secret."""


class RootUnwrapError(Exception):
    """A wrapped value does not open under the root (tampered, or wrapped by another root)."""


class RootKeeper(Protocol):
    """Wraps KMS key material under the root key.

    ``context`` names what is wrapped (``kms:key/<id>/v<n>``) and is bound as associated
    data: a wrapped value moved to another key or version does not unwrap. ``unwrap``
    raises :class:`RootUnwrapError` for a value that does not open and
    :class:`RootUnavailable` when the root cannot be reached."""

    name: str

    async def wrap(self, material: bytes, context: str) -> bytes: ...
    async def unwrap(self, blob: bytes, context: str) -> bytes: ...
    async def health(self) -> None:
        """Raise :class:`RootUnavailable` unless a wrap/unwrap round trip works now."""
        ...

    def close(self) -> None: ...


def open_root_keeper(settings: Settings) -> RootKeeper:
    """The keeper ``settings.root_keeper`` names, opened (``RootUnavailable`` when it cannot
    be: a clear startup error)."""
    if settings.root_keeper == "pkcs11":
        from bastion.kms.pkcs11keeper import Pkcs11Keeper, read_pin

        read_pin(settings)  # a missing PIN is a startup error
        # re-read at each reconnect: an operator who fixes the PIN file needs no restart
        keeper = Pkcs11Keeper(str(settings.pkcs11_module), settings.pkcs11_token_label,
                              lambda: read_pin(settings), settings.pkcs11_key_label)
        keeper.open()
        return keeper
    from bastion.kms.filekeeper import FileKeeper

    return FileKeeper.open(settings.data_dir, settings.root_passphrase.get_secret_value()
                           if settings.root_passphrase else None)
