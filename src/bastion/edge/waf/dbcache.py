"""Compiled Hyperscan databases reused instead of recompiled (docs/waf.md, "Build cache").

In a process, every distinct input (kind, patterns, flags) is compiled once and shared by
every ``Waf`` and ``CrsWaf`` (databases are read-only; scratch space stays per thread).
Across processes, a ``DbCache`` with a directory keeps serialized databases there, one file
per input, named by the SHA-256 of (format, Hyperscan version and the platform it reports,
CPU architecture, mode, kind, patterns, flags, ids). Each file carries an HMAC-SHA256 of its
name and content under a random key kept *outside* the directory (``key_file``), and nothing
is deserialized before the tag checks out: a file that is truncated, corrupted, swapped
with another entry or forged by someone who can write the directory but not read the key is
logged and recompiled, never used. Files are written to a temporary name and renamed, so
processes that build at once each leave a whole, valid file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import platform
import secrets
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hyperscan

log = logging.getLogger("bastion.edge.waf")

FORMAT = b"bastion-waf-db/1\n"
SUFFIX = ".hsdb"
TAG = 32  # HMAC-SHA256
KEY_BYTES = 32
MAX_ENTRY = 256 << 20  # bytes read of one file (the CRS 3.3 phase-2 database: ~8 MiB)
MEMO_SIZE = 256  # databases kept per process
PERSIST_AFTER = 0.05  # seconds: quicker builds are not worth a file
STALE_TMP = 3600.0  # seconds before another writer's leftover temporary file is removed
UNUSED = 30 * 86400.0  # seconds before an entry no process has loaded is removed
MODE = hyperscan.HS_MODE_BLOCK
_OPEN = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Compiled:
    """A database (None: no pattern compiled) and its plan: for each input pattern, the
    flags it was compiled with (its own, or with ``HS_FLAG_PREFILTER`` added) or -1 when it
    was left out (the caller runs it in RE2 alone). Database ids number the kept
    patterns in input order."""

    db: Any
    plan: tuple[int, ...]

    def kept(self) -> list[int]:
        return [i for i, f in enumerate(self.plan) if f != -1]


class Invalid(Exception):
    """A cache file that must not be used (the reason names no secret)."""


_MEMO: dict[str, Compiled] = {}
_LOCK = threading.Lock()  # held while an entry is looked up or built: one build per input


def clear_memo() -> None:
    """Forget this process's compiled databases (tests: a fresh process)."""
    with _LOCK:
        _MEMO.clear()


@cache
def platform_tag() -> str:
    """What a serialized database depends on: the bindings' and library's versions, the
    CPU features Hyperscan reports, the architecture."""
    probe = hyperscan.Database(mode=MODE)
    probe.compile(expressions=[b"a"], ids=[0], flags=[0])
    info = probe.info()
    text = info.decode("ascii", "replace") if isinstance(info, bytes) else str(info)
    text = text.split(" Mode:", 1)[0]
    bindings = getattr(hyperscan, "__version__", "unknown")
    return f"py-hyperscan {bindings}; {text}; {platform.machine()}"


def digest(kind: str, patterns: Sequence[bytes], flags: Sequence[int]) -> str:
    """The SHA-256 naming an input (database ids are the pattern positions)."""
    if len(patterns) != len(flags):
        raise ValueError("one flags value per pattern")
    h = hashlib.sha256()
    for part in (FORMAT, platform_tag().encode(), str(MODE).encode(), kind.encode()):
        h.update(struct.pack(">Q", len(part)) + part)
    h.update(struct.pack(">Q", len(patterns)))
    for pattern, flag in zip(patterns, flags, strict=True):
        h.update(struct.pack(">qQ", flag, len(pattern)) + pattern)
    return h.hexdigest()


class DbCache:
    """Where compiled databases are kept across processes; ``directory`` None: in this
    process only. ``key_file`` (default: beside the directory, ``<directory>.key``) holds
    the HMAC key; it is created 0600 when missing and must not be readable by others."""

    def __init__(
        self,
        directory: Path | None,
        *,
        key_file: Path | None = None,
        persist_after: float = PERSIST_AFTER,
    ) -> None:
        self.directory = directory
        if key_file is None and directory is not None:
            key_file = directory.with_name(directory.name + ".key")
        self.key_file = key_file
        self.persist_after = persist_after
        self._key: bytes | None = None
        self._off = directory is None

    @classmethod
    def default(cls) -> DbCache:
        """``$XDG_CACHE_HOME/bastion/waf`` (else ``~/.cache/bastion/waf``)."""
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
            try:
                base = str(Path.home() / ".cache")
            except RuntimeError:  # no home directory: this process only
                return cls(None)
        return cls(Path(base) / "bastion" / "waf")

    def get(
        self,
        kind: str,
        patterns: Sequence[bytes],
        flags: Sequence[int],
        build: Callable[[], Compiled],
    ) -> Compiled:
        """The compiled database of this input: from this process, from the directory, or
        from ``build()`` (then kept in both)."""
        name = digest(kind, patterns, flags)
        with _LOCK:
            hit = _MEMO.get(name)
            if hit is not None:
                return hit
            compiled, rejected = self._load(name, flags)
            if compiled is None:
                started = time.monotonic()
                compiled = build()
                if len(compiled.plan) != len(patterns):
                    raise ValueError("a plan has one entry per pattern")
                if rejected or time.monotonic() - started >= self.persist_after:
                    self._store(name, compiled)  # a rejected file is overwritten
            if len(_MEMO) >= MEMO_SIZE:
                _MEMO.clear()
            _MEMO[name] = compiled
            return compiled

    # --- the directory -------------------------------------------------------------------

    def _secret(self) -> bytes | None:
        if self._off:
            return None
        if self._key is None:
            assert self.directory is not None and self.key_file is not None
            try:
                _make_dir(self.directory)
                self._key = _read_or_create_key(self.key_file)
            except (OSError, Invalid) as exc:
                log.warning("WAF build cache %s not used: %s", self.directory, exc)
                self._off = True
                return None
        return self._key

    def _path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / (name + SUFFIX)

    def _load(self, name: str, flags: Sequence[int]) -> tuple[Compiled | None, bool]:
        """The entry ``name`` if there is a valid one; and whether a file was rejected."""
        key = self._secret()
        if key is None:
            return None, False
        path = self._path(name)
        try:
            data = _read(path, MAX_ENTRY)
        except FileNotFoundError:
            return None, False
        except (OSError, Invalid) as exc:
            log.warning("WAF build cache: %s unreadable (%s); recompiling", path.name, exc)
            return None, True
        try:
            compiled = _decode(key, name, data, flags)
        except Invalid as exc:
            log.warning("WAF build cache: %s rejected (%s); recompiling", path.name, exc)
            return None, True
        try:
            os.utime(path, follow_symlinks=False)  # in use: not pruned
        except OSError:
            pass
        return compiled, False

    def _store(self, name: str, compiled: Compiled) -> None:
        key = self._secret()
        if key is None or self.directory is None:
            return
        blob = hyperscan.dumpb(compiled.db) if compiled.db is not None else b""
        data = _encode(key, name, compiled.plan, blob)
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.directory)
            with os.fdopen(fd, "wb") as out:  # mkstemp: 0600, O_EXCL
                out.write(data)
            os.replace(tmp, self._path(name))  # atomic: readers see the old or the new file
            tmp = ""
            _prune(self.directory)
        except OSError as exc:
            log.warning("WAF build cache: cannot write in %s (%s)", self.directory, exc)
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _encode(key: bytes, name: str, plan: Sequence[int], blob: bytes) -> bytes:
    meta = json.dumps({"plan": list(plan)}, separators=(",", ":")).encode()
    body = struct.pack(">I", len(meta)) + meta + blob
    return FORMAT + _tag(key, name, body) + body


def _tag(key: bytes, name: str, body: bytes) -> bytes:
    # the entry's name is authenticated too: a valid file moved to another name is refused
    return hmac.new(key, FORMAT + name.encode() + b"\n" + body, hashlib.sha256).digest()


def _decode(key: bytes, name: str, data: bytes, flags: Sequence[int]) -> Compiled:
    """The entry in ``data``; ``Invalid`` unless its tag verifies (checked before anything
    is parsed or deserialized) and its plan fits the input."""
    if not data.startswith(FORMAT) or len(data) < len(FORMAT) + TAG + 4:
        raise Invalid("not a cache entry or truncated")
    tag, body = data[len(FORMAT) : len(FORMAT) + TAG], data[len(FORMAT) + TAG :]
    if not hmac.compare_digest(tag, _tag(key, name, body)):
        raise Invalid("authentication failed")
    (size,) = struct.unpack(">I", body[:4])
    try:
        plan = tuple(json.loads(body[4 : 4 + size])["plan"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid("malformed metadata") from exc
    prefilter = hyperscan.HS_FLAG_PREFILTER
    if len(plan) != len(flags) or not all(
        isinstance(p, int) and p in (-1, f, f | prefilter) for p, f in zip(plan, flags, strict=True)
    ):
        raise Invalid("plan does not fit the patterns")
    blob = body[4 + size :]
    if not blob:
        if any(p != -1 for p in plan):
            raise Invalid("database missing")
        return Compiled(None, plan)
    try:
        db = hyperscan.loadb(blob, MODE)
    except hyperscan.error as exc:  # another Hyperscan build or platform
        raise Invalid(f"cannot deserialize: {type(exc).__name__}") from None
    return Compiled(db, plan)


def _make_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise Invalid("not a directory")
    if st.st_mode & 0o022:
        log.warning(
            "WAF build cache %s is writable by others (entries are still "
            "authenticated; make it 0700)",
            directory,
        )


def _read(path: Path, limit: int) -> bytes:
    fd = os.open(path, _OPEN)  # no symlink; a FIFO does not block the open
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Invalid("not a regular file")
        if st.st_size > limit:
            raise Invalid("too large")
        return f.read(limit + 1)


def _read_or_create_key(path: Path) -> bytes:
    """The HMAC key in ``path``, created (random, 0600, atomically, first writer wins)
    when missing. Refused unless it is this user's and readable by no one else."""
    try:
        fd = os.open(path, _OPEN)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd_tmp, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".key", dir=path.parent)
        try:
            with os.fdopen(fd_tmp, "wb") as out:
                out.write(secrets.token_bytes(KEY_BYTES))
            try:
                os.link(tmp, path)  # never replaces a key another process made
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        fd = os.open(path, _OPEN)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Invalid(f"key file {path} is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise Invalid(f"key file {path} belongs to another user")
        if st.st_mode & 0o077:
            raise Invalid(f"key file {path} is readable or writable by others (chmod 600)")
        key = f.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise Invalid(f"key file {path} is not a {KEY_BYTES}-byte key")
    return key


def _prune(directory: Path) -> None:
    """Remove other writers' stale temporary files and entries unused for ``UNUSED``."""
    now = time.time()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        if not entry.endswith(SUFFIX):
            continue
        age = STALE_TMP if entry.startswith(".tmp-") else UNUSED
        path = directory / entry
        try:
            if now - path.lstat().st_mtime > age:
                path.unlink()
        except OSError:
            pass
