"""``bastion serve --workers N``: N processes serving one listening socket.

The parent prepares everything once (migrations, the admin account, the demo data, the CA
and the server certificate), holds the port, then starts N worker processes (``spawn``:
nothing of the parent's threads or loops is inherited) and supervises them: a worker that
dies is started again, and SIGTERM or SIGINT stops them all gracefully. Each worker listens
on a socket of its own on the one port (``SO_REUSEPORT``): the kernel spreads connections
over them.

What must be shared is shared through the database (refresh families and reuse detection,
codes, sessions, the denylist, the audit chain's sequence, the IAM generation), and through
Redis when ``redis_url`` is set. Without Redis, the short-lived state goes to files in
``data_dir/run`` that every worker maps: the KV (``store.kv.SqliteKV``: pending
authorization requests, login throttling, single-use ids, nonces) and the rate limit
counts (``edge.sharedlimits``). Worker 0 is the leader: it alone runs the jobs that must
run once (purging, KMS rotations and deletions, audit checkpoints and sinks, the server
certificate's renewal, the demo inventory service).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

log = logging.getLogger("bastion.workers")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before restarting a crashed worker
QUICK_EXIT = 10.0  # a worker that exits sooner than this after starting crashed at start
GIVE_UP = 5  # consecutive crashes at start after which the server stops
STOP_TIMEOUT = 30.0  # seconds workers get to finish their requests at shutdown


@dataclass(frozen=True)
class Worker:
    """This process's place among the server's workers."""

    index: int = 0
    count: int = 1

    @property
    def leader(self) -> bool:
        """Runs the jobs that must run once per server."""
        return self.index == 0

    @property
    def shared(self) -> bool:
        """State must be shared with sibling processes."""
        return self.count > 1


SINGLE = Worker()


def run_dir(data_dir: Path) -> Path:
    """Where the workers' shared short-lived state lives (recreated at every start)."""
    return Path(data_dir) / "run"


def shared_kv_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "kv.sqlite3"


def shared_limits_path(data_dir: Path, name: str) -> Path:
    return run_dir(data_dir) / f"limits-{name}.table"


def reset_run_dir(data_dir: Path) -> None:
    """Start with no short-lived state, as a single process starts with empty memory."""
    directory = run_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    for entry in directory.iterdir():
        if entry.is_file() or entry.is_symlink():
            entry.unlink()


def worker_count(configured: int | None, *, dev: bool = False) -> int:
    """``workers``: 0 is one per core this process may run on, and so is unset, except in
    development (``dev``), where one process keeps logs and debuggers simple."""
    if configured is None and dev:
        return 1
    return configured or max(1, len(os.sched_getaffinity(0)))


def bind(host: str, port: int, *, backlog: int | None = 2048) -> socket.socket:
    """A socket on ``host:port`` with ``SO_REUSEPORT``: every worker listens on one of its
    own, and the kernel spreads new connections over them by their addresses (a single
    shared socket would let whichever worker wakes first accept a whole burst). The
    supervisor holds one that does not listen, to keep the port while workers restart.
    ``backlog=None``: bound only."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if backlog is not None:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def build_served(settings: Any, *, demo: bool, worker: Worker) -> tuple[Any, Any]:
    """The ASGI app a server process serves, and its ``TlsServing`` (None without TLS).
    Raises ``edge.tls.TlsError`` when the configured certificate cannot be used."""
    from bastion.app import BastionServer

    server = BastionServer(settings, demo=demo, worker=worker)
    served: Any = server
    tls: Any = None
    if settings.https:
        from bastion.edge.tls import TlsServing

        tls = served = TlsServing(
            server, settings, provider=lambda: server.provider,
            metrics=lambda: getattr(getattr(server.app, "state", None), "metrics", None),
            renew=worker.leader)
        tls.prepare()
    if demo and settings.demo_inventory_port:  # the inventory service, called over mTLS
        from bastion.demo_inventory import DemoServices

        served = DemoServices(served, server=server, settings=settings,
                              serve_inventory=worker.leader)
    return served, tls


def uvicorn_config(app: Any, settings: Any, tls: Any, log_level: str, **kw: Any) -> Any:
    """uvicorn's configuration: the guarded HTTP protocol and its limits (edge/server.py),
    TLS from ``tls``, no access log, no Server header."""
    import uvicorn

    from bastion.edge.server import server_options

    return uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=False,
                          server_header=False, **kw,
                          ssl_context_factory=tls.context_factory if tls is not None else None,
                          **server_options(settings))


def _die_with_parent() -> None:
    """Linux: if the supervisor dies (even by SIGKILL), this worker is killed at once,
    never left serving the socket on its own."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _child(settings: Any, demo: bool, worker: Worker, port: int, log_level: str) -> None:
    """A worker process: serve its own socket on ``port`` until told to stop."""

    _die_with_parent()
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s %(levelname)s "
                        f"[worker {worker.index}] %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the parent migrated
    served, tls = build_served(settings, demo=demo, worker=worker)
    server = _worker_server(uvicorn_config(served, settings, tls, log_level), worker)
    # bound, not listening: asyncio listens once the lifespan startup is done, so no
    # connection waits in the queue of a worker that is still starting (or fails to)
    with bind(settings.host, port, backlog=None) as sock:
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)  # the lifespan startup failed (logged)


def _worker_server(config: Any, worker: Worker) -> Any:
    """uvicorn's server for ``worker`` (uvicorn is imported only in worker processes)."""
    import uvicorn

    class WorkerServer(uvicorn.Server):
        """uvicorn's server, saying where it serves once started, as it does alone."""

        def __init__(self, config: Any, worker: Worker) -> None:
            super().__init__(config)
            self.worker = worker

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and sockets:
                host, port = sockets[0].getsockname()[:2]
                host = f"[{host}]" if ":" in host else host
                logging.getLogger("uvicorn.error").info(
                    "Uvicorn running on %s://%s:%d (worker %d of %d)",
                    "https" if self.config.ssl else "http", host, port, self.worker.index,
                    self.worker.count)

    return WorkerServer(config, worker)


class Supervisor:
    """Starts ``count`` workers on ``port`` and keeps them running until a signal."""

    def __init__(self, settings: Any, *, demo: bool, count: int, port: int,
                 log_level: str) -> None:
        self.settings, self.demo, self.count = settings, demo, count
        self.port, self.log_level = port, log_level
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: dict[int, Any] = {}
        self._started: dict[int, float] = {}
        self._crashes: dict[int, int] = dict.fromkeys(range(count), 0)
        self._stopping = False

    def _start(self, index: int) -> None:
        proc = self._ctx.Process(
            target=_child, name=f"bastion-worker-{index}", daemon=False,
            args=(self.settings, self.demo, Worker(index, self.count), self.port,
                  self.log_level))
        proc.start()
        self._procs[index] = proc
        self._started[index] = time.monotonic()

    def _forward(self, signum: int, frame: Any) -> None:
        """SIGHUP: every worker reloads its certificate files."""
        del frame
        for proc in self._procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    def _stop(self, signum: int, frame: Any) -> None:
        del frame
        if not self._stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, self.count)
        self._stopping = True

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0), or until workers keep crashing at start (1)."""
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._forward)
        try:
            for index in range(self.count):
                self._start(index)
            return self._watch()
        finally:
            self._terminate()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _watch(self) -> int:
        restart_at: dict[int, float] = {}
        while not self._stopping:
            wait([p.sentinel for p in self._procs.values()], timeout=0.2)
            now = time.monotonic()
            for index, proc in list(self._procs.items()):
                if proc.is_alive() or index in restart_at or self._stopping:
                    continue
                quick = now - self._started[index] < QUICK_EXIT
                self._crashes[index] = self._crashes[index] + 1 if quick else 1
                if self._crashes[index] >= GIVE_UP:
                    log.error("worker %d exited %d times right after starting (last exit "
                              "code %s): stopping", index, self._crashes[index],
                              proc.exitcode)
                    return 1
                delay = RESTART_BACKOFF[min(self._crashes[index],
                                            len(RESTART_BACKOFF)) - 1]
                log.error("worker %d (pid %s) exited with code %s; restarting it in "
                          "%.1f s", index, proc.pid, proc.exitcode, delay)
                restart_at[index] = now + delay
            for index, when in list(restart_at.items()):
                if now >= when and not self._stopping:
                    del restart_at[index]
                    self._start(index)
        return 0

    def _terminate(self) -> None:
        for proc in self._procs.values():
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self._procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker pid %s did not stop in %.0f s: killed", proc.pid,
                          STOP_TIMEOUT)
                proc.kill()
                proc.join()


__all__ = ["SINGLE", "Supervisor", "Worker", "bind", "build_served",
           "reset_run_dir", "run_dir", "shared_kv_path", "shared_limits_path",
           "uvicorn_config", "worker_count"]
