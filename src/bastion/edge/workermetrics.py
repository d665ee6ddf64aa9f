"""``/metrics`` for ``bastion serve --workers N``: every worker's series in one scrape.

Each worker keeps its own registry (counters live in the process that counts). Every
``interval`` seconds a worker writes its exposition to ``data_dir/run/metrics-<i>.prom``
(replaced atomically); the worker that takes a scrape answers with its own live samples
and the other workers' latest files, each sample labelled ``worker="<i>"``, so that
``sum without (worker) (...)`` gives the server's totals. A file older than ``stale``
seconds (a worker that stopped writing) is left out rather than reported as current.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

log = logging.getLogger("bastion.edge.metrics")


class _Merged(Collector):
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return self.families


def merge(texts: dict[int, str]) -> bytes:
    """Expositions by worker index → one exposition, every sample labelled by worker."""
    families: dict[str, Any] = {}
    for index in sorted(texts):
        for family in text_string_to_metric_families(texts[index]):
            kept = families.setdefault(family.name, family)
            labelled = [Sample(s.name, {**s.labels, "worker": str(index)}, s.value,
                               s.timestamp, s.exemplar) for s in family.samples]
            if kept is family:
                family.samples = labelled
            else:
                kept.samples.extend(labelled)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)


class WorkerMetrics:
    """The exposition of one worker among ``count`` (``exposition()`` as ``Metrics``)."""

    def __init__(self, metrics: Any, directory: Path, index: int, count: int, *,
                 interval: float = 1.0, stale: float = 10.0) -> None:
        self.metrics = metrics
        self.directory = directory
        self.index, self.count = index, count
        self.interval, self.stale = interval, stale

    def path(self, index: int) -> Path:
        return self.directory / f"metrics-{index}.prom"

    def write(self) -> None:
        """This worker's exposition to its file (a reader never sees half of it)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path(self.index)
        temporary = target.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.metrics.exposition())
        os.replace(temporary, target)

    def exposition(self) -> bytes:
        texts = {self.index: self.metrics.exposition().decode()}
        now = time.time()
        for index in range(self.count):
            if index == self.index:
                continue
            path = self.path(index)
            try:
                if now - path.stat().st_mtime > self.stale:
                    continue
                texts[index] = path.read_text()
            except OSError:
                continue  # not written yet, or being restarted
        try:
            return merge(texts)
        except ValueError:  # a file that does not parse: answer for this worker alone
            log.exception("metrics: another worker's file could not be read")
            return merge({self.index: texts[self.index]})

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.write)
            except OSError as exc:
                log.warning("metrics: cannot write %s: %s", self.path(self.index), exc)
            await asyncio.sleep(self.interval)


__all__ = ["WorkerMetrics", "merge"]
