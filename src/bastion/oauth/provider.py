"""The authorization server's services in one object, built once at start.

Endpoints receive a ``Provider``; nothing here is an import-time global.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bastion.audit.notary import Notary
from bastion.audit.sinks import Sink, parse_sinks, sink_secret
from bastion.audit.trail import AuditTrail
from bastion.config import Settings
from bastion.iam.admin import IamAdmin
from bastion.iam.authorizer import Authorizer
from bastion.identity.clients import CLIENT_ID_RE, CLIENT_SQL, ClientInfo, client_from_row
from bastion.identity.throttle import LoginThrottle, ThrottlePolicy
from bastion.kms import KeyWrapper
from bastion.kms.service import KMS, open_kms
from bastion.pki.ca import CertificateAuthority
from bastion.store.fast import FastStore, SqliteStore
from bastion.store.kv import KV
from bastion.store.models import (
    AuthorizationCode,
    IssuedAccessToken,
    Session,
    TokenFamily,
)
from bastion.tokens import keys
from bastion.tokens.denylist import Denylist
from bastion.tokens.issue import TokenIssuer
from bastion.tokens.verify import TokenVerifier
from bastion.workers import SINGLE, Worker

log = logging.getLogger("bastion.oauth")


@dataclass
class Provider:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    kv: KV
    wrapper: KeyWrapper
    keyring: keys.KeyRing
    denylist: Denylist
    fast: FastStore
    worker: Worker = SINGLE  # its place among bastion serve's worker processes
    throttle: LoginThrottle = field(init=False)
    issuer_url: str = field(init=False)
    tokens: TokenIssuer = field(init=False)
    verifier: TokenVerifier = field(init=False)
    audit: AuditTrail = field(init=False)
    notary: Notary = field(init=False)
    iam: Authorizer = field(init=False)
    iam_admin: IamAdmin = field(init=False)
    kms: KMS = field(init=False)
    ca: CertificateAuthority = field(init=False)
    _clients: dict[str, tuple[float, ClientInfo | None]] = field(default_factory=dict)
    _client_lookups: dict[str, asyncio.Future[ClientInfo | None]] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sinks: list[Sink] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.settings
        self.issuer_url = s.effective_issuer
        self.tokens = TokenIssuer(issuer=self.issuer_url, keyring=lambda: self.keyring)
        self.verifier = TokenVerifier(issuer=self.issuer_url, audience=self.api_audience,
                                      jwks=KeyRingSource(self), algorithms=keys.ALGORITHMS,
                                      denylist=self.denylist)
        self.audit = AuditTrail(self.fast, postgres=not isinstance(self.fast, SqliteStore),
                                spool_dir=self._spool_dir(),
                                failure_mode=s.audit_failure_mode, batch_max=s.audit_batch_max)
        self.notary = Notary(self.fast, self.wrapper, postgres=self.audit.postgres)
        self._checkpointed = (0, time.monotonic())  # records appended, when
        self.iam = Authorizer(self.fast, s.account_id, s.iam_cache_ttl)
        self.iam_admin = IamAdmin(self.fast, s.account_id, self.audit,
                                  on_change=self.iam.invalidate)
        self.throttle = LoginThrottle(self.kv, ThrottlePolicy(
            s.login_max_failures_account, s.login_max_failures_ip, s.login_backoff_base,
            s.login_backoff_max, s.login_failure_window))
        self.kms = open_kms(s, self.fast, self.iam, self.audit)  # RootUnavailable: fail closed
        self.ca = CertificateAuthority(self)  # its keys are KMS keys, made on first use

    def _spool_dir(self) -> Path:
        """Each worker spools to a directory of its own and drains it (worker 0 uses the
        single process's)."""
        spool = Path(self.settings.data_dir) / "audit-spool"
        return spool if self.worker.index == 0 else spool / f"worker-{self.worker.index}"

    # --- endpoints' URLs -------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.issuer_url + path

    @property
    def api_audience(self) -> str:
        """``aud`` of access tokens: the resource servers Bastion serves (Orders, APIs)."""
        return self.issuer_url

    @property
    def secure_cookies(self) -> bool:
        return self.issuer_url.startswith("https://")

    # --- clients, cached briefly: the token endpoint must not hit the database per call ---
    async def client(self, client_id: str) -> ClientInfo | None:
        now = time.monotonic()
        hit = self._clients.get(client_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        if not CLIENT_ID_RE.fullmatch(client_id):
            return None
        # single flight: when the entry expires under load, one lookup serves every waiter
        pending = self._client_lookups.get(client_id)
        if pending is None:
            pending = asyncio.ensure_future(self._load_client(client_id))
            self._client_lookups[client_id] = pending
            pending.add_done_callback(lambda _: self._client_lookups.pop(client_id, None))
        return await asyncio.shield(pending)

    async def _load_client(self, client_id: str) -> ClientInfo | None:
        row = await self.fast.one(CLIENT_SQL, client_id=client_id)
        info = client_from_row(row) if row is not None else None
        if len(self._clients) > 10_000:
            self._clients.clear()
        self._clients[client_id] = (time.monotonic() + self.settings.client_cache_ttl, info)
        return info

    # --- background work -------------------------------------------------------------------
    async def refresh_keys(self) -> None:
        async with self.sessions() as db:
            self.keyring = await keys.load_keyring(db, self.wrapper, self.keyring)

    async def purge(self) -> None:
        """Delete what has expired, so tables do not grow without bound."""
        now = int(time.time())
        async with self.sessions.begin() as db:
            await db.execute(delete(AuthorizationCode).where(AuthorizationCode.expires_at < now))
            await db.execute(delete(Session).where(Session.expires_at < now))
            await db.execute(delete(IssuedAccessToken).where(IssuedAccessToken.expires_at < now))
            await db.execute(delete(TokenFamily).where(TokenFamily.expires_at < now))
            # revoked families are kept until expiry: reuse of their tokens stays detectable
            await self.denylist.purge(db, now)
            await keys.purge_expired(db, now)
        await self.kms.housekeeping()  # due key deletions and automatic rotations

    async def _every(self, seconds: float, job: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await getattr(self, job)()
            except Exception:  # keep the loop alive; the next run retries
                log.exception("background job %s failed", job)

    async def _sync(self) -> None:
        await self.refresh_keys()
        await self.denylist.sync()

    async def checkpoint(self) -> None:
        if isinstance(self.fast, SqliteStore):
            await anyio.to_thread.run_sync(self.fast.checkpoint)

    async def audit_housekeeping(self) -> None:
        """Move spooled records into the trail; sign a checkpoint every N records or T
        seconds with new records."""
        s = self.settings
        await self.audit.drain_spool()
        if not self.worker.leader:
            return
        count, when = self._checkpointed
        new = self.audit.appended - count
        overdue = time.monotonic() - when >= s.audit_checkpoint_interval
        if new >= s.audit_checkpoint_every or (new > 0 and overdue) or (
                self.worker.shared and overdue):  # the other workers' records count too
            self._checkpointed = (self.audit.appended, time.monotonic())
            await self.notary.checkpoint()

    def start_background(self) -> None:
        """Every worker keeps its key ring and denylist current and drains its audit spool;
        the leader alone purges, runs KMS rotations and deletions, checkpoints and ships
        the audit trail (``workers``)."""
        self._tasks.append(asyncio.create_task(self._every(self.settings.key_refresh_interval,
                                                           "_sync")))
        self._tasks.append(asyncio.create_task(self._every(1.0, "audit_housekeeping")))
        if not self.worker.leader:
            return
        self._tasks.append(asyncio.create_task(self._every(self.settings.purge_interval,
                                                           "purge")))
        self._tasks.append(asyncio.create_task(self._every(1.0, "checkpoint")))
        for spec in parse_sinks(self.settings.audit_sinks, allow_http_loopback=self.settings
                                .audit_sink_allow_http_loopback):
            sink = Sink(spec, self.fast, self.settings.data_dir / "audit-sinks",
                        ocsf=self.settings.audit_sink_format == "ocsf",
                        secret=sink_secret(self.settings),
                        allow_http_loopback=self.settings.audit_sink_allow_http_loopback)
            self._sinks.append(sink)
            self._tasks.append(asyncio.create_task(sink.run()))

    async def close(self) -> None:
        lost: Exception | None = None
        try:
            await self.audit.close()  # logs what was spooled or lost; raises on a loss
        except Exception as exc:  # re-raised once everything else is closed
            lost = exc
        try:
            if self.audit.appended > self._checkpointed[0]:
                await self.notary.checkpoint()
        except Exception:
            log.exception("audit: the final checkpoint at shutdown failed")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self._sinks:
            await sink.close()
        self.kms.close()
        await self.kv.close()
        await self.fast.close()
        await self.engine.dispose()
        if lost is not None:
            raise lost


class KeyRingSource:
    """The provider's own key ring as a ``JWKSource``: in-process, always current."""

    def __init__(self, provider: Provider) -> None:
        self._provider = provider

    async def get_key(self, kid: str | None) -> keys.AnyKey | None:
        if kid is None:
            return None
        return self._provider.keyring.public.get(kid)
