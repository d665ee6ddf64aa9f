"""The rate limiter the worker processes of one host share, without Redis.

``bastion serve --workers N`` runs N processes; a limit kept in each one's memory would let
N times the rate through. ``SharedBackend`` keeps the counts in a table in a memory-mapped
file that every worker maps (``MAP_SHARED``), and makes each decision under an exclusive
``flock`` on that file: the same GCRA and sliding-window steps as the memory and Redis
backends, atomic across processes, at the cost of a lock and a few struct reads (no
round trip, no thread, no event-loop wait beyond the lock itself).

The table is open addressing over ``slots`` fixed-size slots. A key is found by a keyed
64-bit BLAKE2b hash (the key is random per table, so nobody can aim collisions at another
client's slot); a slot whose counts no longer matter is free. When all ``PROBE`` slots a
key may use are live, the one that matters for the shortest time is taken over: its key
starts again with a full quota, as when the memory backend's bound is reached.

Times are the wall clock in microseconds, the one clock every process reads alike (the
Redis backend uses the server's clock for the same reason).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bastion.edge.ratelimit import Verdict, gcra, sliding, verdict, window_verdict

MAGIC = b"BSTNRL01"
HEADER = struct.Struct("<8sI4x16s")  # magic, slots, the hash key
SLOT = struct.Struct("<Qqqqq")  # key hash (0: never used), a, b, c, matters until (µs)
PROBE = 16  # slots a key may occupy, from its hash onwards
DEFAULT_SLOTS = 1 << 17  # 131,072 keys, 5 MiB

State = tuple[int, int, int]
# (stored state or None, now µs) -> (state to store or None, until when it matters, result)
Step = Callable[[State | None, int], tuple[State | None, int, Verdict]]


class SharedTable:
    """A fixed-size table of ``(a, b, c)`` states by key, in a file every process maps.
    Created (or reset, when its shape differs) by the first process to open it."""

    def __init__(self, path: Path, *, slots: int = DEFAULT_SLOTS,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        if slots < PROBE:
            raise ValueError(f"slots must be >= {PROBE}")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._clock = clock  # µs
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        size = HEADER.size + slots * SLOT.size
        try:
            os.fchmod(self._fd, 0o600)
            with self._locked():
                header = os.pread(self._fd, HEADER.size, 0)
                fits = (len(header) == HEADER.size and os.fstat(self._fd).st_size == size
                        and HEADER.unpack(header)[:2] == (MAGIC, slots))
                if not fits:
                    os.ftruncate(self._fd, 0)  # zero pages: every slot unused
                    os.ftruncate(self._fd, size)
                    os.pwrite(self._fd, HEADER.pack(MAGIC, slots, secrets.token_bytes(16)), 0)
                _, self.slots, self._key = HEADER.unpack(os.pread(self._fd, HEADER.size, 0))
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _hash(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "little") or 1  # 0 marks a slot never used

    def step(self, key: str, fn: Step) -> Verdict:
        """Run one decision on ``key``'s state, atomically across processes."""
        h = self._hash(key)
        first = h % self.slots
        mm, unpack, base, size = self._map, SLOT.unpack_from, HEADER.size, SLOT.size
        with self._locked():
            now = self._clock()
            target = free = victim = -1
            state: State | None = None
            oldest = 0
            for probe in range(PROBE):
                offset = base + ((first + probe) % self.slots) * size
                held, a, b, c, until = unpack(mm, offset)
                if held == h and until > now:
                    target, state = offset, (a, b, c)
                    break
                if held == h or held == 0 or until <= now:
                    if free < 0:
                        free = offset
                elif victim < 0 or until < oldest:
                    victim, oldest = offset, until
            new, until, result = fn(state, now)
            if new is not None:
                where = target if target >= 0 else free if free >= 0 else victim
                SLOT.pack_into(mm, where, h, new[0], new[1], new[2], until)
            return result

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


class SharedBackend:
    """A rate limit ``Backend`` over a ``SharedTable``: the limit holds across the worker
    processes of one host."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    async def take(self, key: str, interval_us: int, burst: int) -> Verdict:
        def step(state: State | None, now: int) -> tuple[State | None, int, Verdict]:
            allowed, tat = gcra(None if state is None else state[0], now, interval_us, burst)
            result = verdict(allowed, tat - now, interval_us, burst)
            return ((tat, 0, 0) if allowed else None), tat, result

        return self.table.step("g:" + key, step)

    async def window(self, key: str, window_us: int, limit: int) -> Verdict:
        def step(state: State | None, now: int) -> tuple[State | None, int, Verdict]:
            allowed, (start, cur, prev) = sliding(state, now, window_us, limit)
            result = window_verdict(allowed, now - start, cur, prev, window_us, limit)
            return ((start, cur, prev) if allowed else None), start + 2 * window_us, result

        return self.table.step("w:" + key, step)


__all__ = ["DEFAULT_SLOTS", "SharedBackend", "SharedTable"]
