"""The rate limiter shared by the worker processes of one host (a table in a mapped file,
decisions under flock): the same decisions as the memory backend, one limit across real
processes, a bounded table that takes over the least useful slot, and a table of another
shape reset rather than misread."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from bastion.edge.ratelimit import US, MemoryBackend
from bastion.edge.sharedlimits import PROBE, SharedBackend, SharedTable
from tests.racers import race

pytestmark = pytest.mark.anyio


class Clock:
    """One fake instant for both backends: seconds for memory, µs for the table."""

    def __init__(self) -> None:
        self.us = 1_000_000_000_000

    def seconds(self) -> float:
        return self.us / US

    def micros(self) -> int:
        return self.us


async def test_same_decisions_as_the_memory_backend(tmp_path: Path) -> None:
    clock = Clock()
    shared = SharedBackend(SharedTable(tmp_path / "rl", slots=1024, clock=clock.micros))
    memory = MemoryBackend(clock=clock.seconds)
    rng = random.Random(7)
    try:
        for _ in range(3000):
            key = f"ip:{rng.randrange(5)}"
            if rng.random() < 0.5:
                got = await shared.take(key, 200_000, 3)
                want = await memory.take(key, 200_000, 3)
            else:
                got = await shared.window(key, 1_000_000, 4)
                want = await memory.window(key, 1_000_000, 4)
            assert got == want
            clock.us += rng.choice([0, 0, 1, 50_000, 199_999, 400_000, 2_000_000])
    finally:
        shared.table.close()


async def test_two_tables_on_one_file_enforce_one_limit(tmp_path: Path) -> None:
    a = SharedBackend(SharedTable(tmp_path / "rl", slots=64))
    b = SharedBackend(SharedTable(tmp_path / "rl", slots=64))  # opened, not reset
    try:
        verdicts = [await (a if i % 2 else b).take("k", 60 * US, 5) for i in range(8)]
        assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 3
        assert (await a.window("w", 60 * US, 2)).allowed
        assert (await b.window("w", 60 * US, 2)).allowed
        assert not (await a.window("w", 60 * US, 2)).allowed
    finally:
        a.table.close()
        b.table.close()


async def test_gcra_and_window_keys_do_not_collide(tmp_path: Path) -> None:
    backend = SharedBackend(SharedTable(tmp_path / "rl", slots=64))
    try:
        assert (await backend.take("k", 60 * US, 1)).allowed
        assert (await backend.window("k", 60 * US, 1)).allowed
        assert not (await backend.take("k", 60 * US, 1)).allowed
    finally:
        backend.table.close()


async def test_a_full_table_takes_over_the_slot_that_matters_least(tmp_path: Path) -> None:
    clock = Clock()
    table = SharedTable(tmp_path / "rl", slots=PROBE, clock=clock.micros)
    backend = SharedBackend(table)
    try:
        # every slot live; key i matters until i seconds from now
        for i in range(PROBE):
            assert (await backend.take(f"k{i}", (i + 1) * US, 1)).allowed
        assert (await backend.take("new", US, 1)).allowed  # took k0's slot
        assert not (await backend.take("new", US, 1)).allowed
        assert not (await backend.take(f"k{PROBE - 1}", PROBE * US, 1)).allowed  # kept
        clock.us += 100 * US  # everything expired: slots are free again
        assert (await backend.take(f"k{PROBE - 1}", PROBE * US, 1)).allowed
    finally:
        table.close()


async def test_hostile_keys_are_opaque(tmp_path: Path) -> None:
    backend = SharedBackend(SharedTable(tmp_path / "rl", slots=256))
    try:
        keys = ["", "\x00", "é" * 5000, "ip:1\nip:2", "g:ip:1"]
        for key in keys:
            assert (await backend.take(key, 60 * US, 1)).allowed
        for key in keys:
            assert not (await backend.take(key, 60 * US, 1)).allowed
    finally:
        backend.table.close()


def test_a_table_of_another_shape_is_reset(tmp_path: Path) -> None:
    path = tmp_path / "rl"
    path.write_bytes(b"garbage" * 100)
    table = SharedTable(path, slots=32)
    table.close()
    assert path.stat().st_size > 700
    assert path.stat().st_mode & 0o777 == 0o600
    again = SharedTable(path, slots=64)  # another size: reset, not misread
    again.close()


def _worker(path: Path, start, results) -> None:  # type: ignore[no-untyped-def]
    async def main() -> int:
        backend = SharedBackend(SharedTable(path, slots=1024))
        start.wait()
        admitted = 0
        for _ in range(300):
            admitted += (await backend.take("shared", 3600 * US, 100)).allowed
        backend.table.close()
        return admitted
    results.put(asyncio.run(main()))


def test_one_limit_across_real_processes(tmp_path: Path) -> None:
    """Four processes race for a burst of 100: exactly 100 are admitted in all."""
    path = tmp_path / "rl"
    SharedTable(path, slots=1024).close()
    assert sum(race(_worker, path)) == 100
