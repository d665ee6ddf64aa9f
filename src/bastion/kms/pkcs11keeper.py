"""The ``pkcs11`` root keeper: an AES-256 key generated inside a PKCS#11 token (PKCS#11
v2.40 §2.8 CKM_AES_KEY_GEN) with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, so it never
leaves the HSM; KMS key material is wrapped with CKM_AES_GCM (§2.12.3: 96-bit IV, 128-bit
tag, the wrap context as AAD).

Every PKCS#11 call runs on one dedicated thread (tokens such as SoftHSM2 crash when one key
is used from two threads at once) and off the event loop. The session is opened at start
(a wrong PIN or a missing token is a clear startup error) and re-opened after a failure, at
most once per ``retry_interval``: while the token is unreachable every call fails closed
with :class:`RootUnavailable`, and the keeper recovers when it is back. The unwrapped
material is cached above this layer (:mod:`bastion.kms.material`), keeping the HSM off the
hot path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from bastion.kms.root import RootUnavailable, RootUnwrapError

if TYPE_CHECKING:
    from bastion.config import Settings

log = logging.getLogger("bastion.kms")
T = TypeVar("T")
_FORMAT = b"\x01"
_NONCE = 12


def read_pin(settings: Settings) -> str:
    if settings.pkcs11_pin is not None:
        return settings.pkcs11_pin.get_secret_value()
    if settings.pkcs11_pin_file is not None:
        try:
            return settings.pkcs11_pin_file.read_text().strip()
        except OSError as exc:
            raise RootUnavailable(f"cannot read pkcs11_pin_file: {exc.strerror}") from None
    raise RootUnavailable("root_keeper pkcs11 needs pkcs11_pin or pkcs11_pin_file")


class Pkcs11Keeper:
    name = "pkcs11"

    def __init__(self, module: str, token_label: str, pin: str | Callable[[], str],
                 key_label: str, *, retry_interval: float = 1.0) -> None:
        self._module = module
        self._token_label = token_label
        self._pin = pin
        self._key_label = key_label
        self._retry_interval = retry_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11")
        self._lock = threading.Lock()  # belt and braces: one call into the token at a time
        self._session: Any = None
        self._key: Any = None
        self._failed_at = -1e9
        self._problem = "not opened"

    # --- blocking side (the PKCS#11 thread) ------------------------------------------------
    def _connect(self) -> None:
        import pkcs11
        from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

        try:
            lib = pkcs11.lib(self._module)
            token = lib.get_token(token_label=self._token_label)
        except (pkcs11.exceptions.PKCS11Error, RuntimeError, OSError) as exc:
            raise RootUnavailable(f"PKCS#11 token {self._token_label!r} not available via "
                                  f"{self._module} ({type(exc).__name__})") from None
        pin = self._pin() if callable(self._pin) else self._pin
        try:
            try:
                session = token.open(rw=True, user_pin=pin)
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                # PKCS#11 logs in per application: another session of this process holds it
                session = token.open(rw=True)
        except pkcs11.exceptions.PinIncorrect:
            raise RootUnavailable(f"PKCS#11 token {self._token_label!r}: wrong PIN") from None
        except pkcs11.exceptions.PKCS11Error as exc:
            raise RootUnavailable(f"PKCS#11 token {self._token_label!r}: cannot log in "
                                  f"({type(exc).__name__})") from None
        try:
            try:
                key = session.get_key(object_class=ObjectClass.SECRET_KEY,
                                      key_type=KeyType.AES, label=self._key_label)
            except pkcs11.exceptions.NoSuchKey:
                key = session.generate_key(
                    KeyType.AES, 256, label=self._key_label, store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                              Attribute.TOKEN: True, Attribute.PRIVATE: True})
                log.info("generated the KMS root key in PKCS#11 token %r", self._token_label)
            if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
                raise RootUnavailable(f"the root key {self._key_label!r} in token "
                                      f"{self._token_label!r} is extractable: refusing it")
        except BaseException:
            session.close()
            raise
        self._session, self._key = session, key

    def _drop(self) -> None:
        session, self._session, self._key = self._session, None, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # the token may be gone already
                log.debug("closing the PKCS#11 session: %s", type(exc).__name__)

    def _drop_session_for_test(self) -> None:
        """Close the session behind the keeper's back (the token went away and came back):
        only tests call this, on the PKCS#11 thread."""
        if self._session is not None:
            self._session.close()

    def _ready(self) -> Any:
        if self._key is not None:
            return self._key
        if time.monotonic() - self._failed_at < self._retry_interval:
            raise RootUnavailable(self._problem)
        try:
            self._connect()
        except RootUnavailable as exc:
            self._failed_at, self._problem = time.monotonic(), str(exc)
            log.error("KMS root keeper: %s", exc)
            raise
        return self._key

    def _crypt(self, encrypt: bool, data: bytes, nonce: bytes, aad: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        with self._lock:
            for attempt in (1, 2):
                key = self._ready()
                params = GCMParams(nonce, aad, 128)
                try:
                    if encrypt:
                        out: bytes = key.encrypt(data, mechanism=Mechanism.AES_GCM,
                                                 mechanism_param=params)
                    else:
                        out = key.decrypt(data, mechanism=Mechanism.AES_GCM,
                                          mechanism_param=params)
                    return out
                except pkcs11.exceptions.PKCS11Error as exc:
                    if not self._alive():
                        self._drop()
                        if attempt == 1:
                            self._failed_at = -1e9  # reconnect at once, once
                            continue
                        raise RootUnavailable("PKCS#11 token went away") from None
                    if encrypt:
                        raise RootUnavailable(f"PKCS#11 wrap failed ({type(exc).__name__})") \
                            from None
                    raise RootUnwrapError("the wrapped key material does not open") from None
            raise RootUnavailable("PKCS#11 token went away")  # pragma: no cover

    def _alive(self) -> bool:
        """Whether the session still works (a call into the token, not a cached value)."""
        try:
            return self._session is not None and len(self._session.generate_random(64)) == 8
        except Exception:
            return False

    # --- async side ------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def open(self) -> None:
        """Blocking: connect now (startup), raising :class:`RootUnavailable` when the token
        or the PIN is wrong."""
        self._executor.submit(self._opened).result()

    def _opened(self) -> None:
        with self._lock:
            self._failed_at = -1e9
            self._ready()

    async def wrap(self, material: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE)
        body = await self._call(self._crypt, True, material, nonce, context.encode())
        return _FORMAT + nonce + body

    async def unwrap(self, blob: bytes, context: str) -> bytes:
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _FORMAT:
            raise RootUnwrapError("malformed wrapped key material")
        return await self._call(self._crypt, False, blob[1 + _NONCE:], blob[1:1 + _NONCE],
                                context.encode())

    async def health(self) -> None:
        probe = os.urandom(16)
        try:
            ok = await self.unwrap(await self.wrap(probe, "health"), "health") == probe
        except RootUnwrapError:
            ok = False
        if not ok:
            raise RootUnavailable("the PKCS#11 root key fails a round trip")

    def close(self) -> None:
        try:
            self._executor.submit(self._drop).result(timeout=10)
        finally:
            self._executor.shutdown(wait=False)
