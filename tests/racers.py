"""Real processes started together, for tests of state shared across processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def race(target: Callable[..., None], *args: Any, processes: int = 4) -> list[Any]:
    """Run ``target(*args, start, results)`` in ``processes`` spawned processes, released
    at once by ``start``; each puts one result in ``results``. Returns the results."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    start.set()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out
