"""Root key migration (``bastion kms migrate-root --to pkcs11|file``): every key version's
material is re-wrapped under another root keeper. Data is never re-encrypted: ciphertexts
name a key version, whose material stays the same; only its wrapping changes.

Crash-safe at every point, in three steps, each one atomic or idempotent:

1. **stage** -- for each version wrapped by the source root, unwrap it, wrap it under the
   target, check that the new wrapping opens to the same bytes, and store it in
   ``kms_root_wrappings`` tagged with the target keeper (one row per commit). The main rows
   are untouched: the old root decrypts everything; a re-run stages only what is missing.
2. **switch** -- in one transaction: the old wrappings move to ``kms_root_wrappings``
   (tagged with the source keeper) and the staged ones into ``kms_key_versions``. Versions
   created meanwhile (a rotation) are staged first; the switch refuses to run while any
   source-wrapped version has no staged wrapping. Before the commit the old root decrypts
   everything, after it both do (the KMS falls back to ``kms_root_wrappings`` when a row
   names another keeper).
3. **drop** -- delete the old root's wrappings. From here only the new root decrypts.

After a crash, running the migration again finishes it (or run it back the other way).

Audited (given ``audit``) as ``MigrateRoot``: one record before anything is read (from and
to keeper names, how many key versions there are and how many the source wraps; a trail
that cannot record it stops the migration), one at the end with the counts, or one with
``errorCode`` (the exception's class name) when it fails. No record holds key material, a
wrapping or a keeper's PIN or passphrase.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.kms.core import wrap_context
from bastion.kms.root import RootKeeper, RootUnavailable
from bastion.store.fast import FastStore

__all__ = ["STEPS", "MigrationError", "MigrationReport", "migrate_root"]

#: the checkpoints ``migrate_root`` reports, in order (tests crash the process at each)
STEPS = ("staged-first", "staged", "switched", "dropped")
Checkpoint = Callable[[str], Awaitable[None]]

_MISSING = ("SELECT v.key_id, v.version, v.material FROM kms_key_versions v "
            "WHERE v.keeper = :src AND NOT EXISTS (SELECT 1 FROM kms_root_wrappings w "
            "WHERE w.key_id = v.key_id AND w.version = v.version AND w.keeper = :dst) "
            "ORDER BY v.key_id, v.version")


class Recorder(Protocol):
    async def emit(self, event_name: str, **fields: Any) -> Any: ...


class MigrationError(Exception):
    """The migration cannot run (same keeper, unknown keeper in the data, a wrapping that
    does not round-trip). Nothing was switched; the message holds no secret."""


@dataclass(frozen=True)
class MigrationReport:
    source: str
    target: str
    staged: int
    switched: int
    dropped: int
    versions: int


async def _stage(fast: FastStore, source: RootKeeper, target: RootKeeper,
                 checkpoint: Checkpoint) -> int:
    staged = 0
    for row in await fast.all(_MISSING, src=source.name, dst=target.name):
        key_id, number = str(row[0]), int(row[1])
        context = wrap_context(key_id, number)
        secret = await source.unwrap(bytes(row[2]), context)
        new = await target.wrap(secret, context)
        if await target.unwrap(new, context) != secret:
            raise MigrationError(f"the new root does not round-trip key {key_id} "
                                 f"version {number}")
        async with fast.transaction() as tx:
            await tx.run("DELETE FROM kms_root_wrappings WHERE key_id = :id AND "
                         "version = :version AND keeper = :dst", id=key_id, version=number,
                         dst=target.name)
            await tx.run("INSERT INTO kms_root_wrappings (key_id, version, keeper, material) "
                         "VALUES (:id, :version, :dst, :material)", id=key_id,
                         version=number, dst=target.name, material=new)
        staged += 1
        if staged == 1:
            await checkpoint("staged-first")
    return staged


async def _switch(fast: FastStore, source: str, target: str) -> int | None:
    """The atomic switch; None when a version appeared since staging (stage again)."""
    params = {"src": source, "dst": target}
    async with fast.transaction() as tx:
        if await tx.one(_MISSING, **params) is not None:
            return None
        # stale old-root rows (from an earlier migration back) give way to the current ones
        await tx.run("DELETE FROM kms_root_wrappings WHERE keeper = :src AND EXISTS "
                     "(SELECT 1 FROM kms_key_versions v WHERE v.keeper = :src AND "
                     "v.key_id = kms_root_wrappings.key_id AND "
                     "v.version = kms_root_wrappings.version)", **params)
        await tx.run("INSERT INTO kms_root_wrappings (key_id, version, keeper, material) "
                     "SELECT key_id, version, keeper, material FROM kms_key_versions "
                     "WHERE keeper = :src", **params)
        switched = await tx.run(
            "UPDATE kms_key_versions SET keeper = :new_keeper, material = (SELECT w.material "
            "FROM kms_root_wrappings w WHERE w.key_id = kms_key_versions.key_id AND "
            "w.version = kms_key_versions.version AND w.keeper = :dst) WHERE keeper = :src",
            new_keeper=target, **params)  # one name per use: PostgreSQL types each apart
        await tx.run("DELETE FROM kms_root_wrappings WHERE keeper = :dst AND EXISTS "
                      "(SELECT 1 FROM kms_key_versions v WHERE v.keeper = :dst AND "
                      "v.key_id = kms_root_wrappings.key_id AND "
                      "v.version = kms_root_wrappings.version)", **params)
    return switched


async def migrate_root(fast: FastStore, source: RootKeeper, target: RootKeeper, *,
                       checkpoint: Checkpoint | None = None, audit: Recorder | None = None,
                       user_identity: Mapping[str, Any] | None = None) -> MigrationReport:
    """Re-wrap every key version from ``source`` to ``target`` (the three steps above).
    ``await checkpoint(step)`` runs after each step of :data:`STEPS`. Raises
    :class:`MigrationError`, or the keepers' ``RootUnavailable``/``RootUnwrapError``
    (before the switch, so nothing changed for the old root). With ``audit``, the start,
    the end or the failure is a ``MigrateRoot`` record by ``user_identity``."""
    async def record(phase: str, **fields: Any) -> None:
        if audit is not None:
            await audit.emit("MigrateRoot", user_identity=user_identity,
                             request_parameters={"rootKeeper": {"from": source.name,
                                                                "to": target.name}},
                             additional={"phase": phase}, **fields)

    row = await fast.one("SELECT COUNT(*), SUM(CASE WHEN keeper = :src THEN 1 ELSE 0 END) "
                         "FROM kms_key_versions", src=source.name)
    await record("start", response_elements={
        "keyVersions": int(row[0] or 0) if row else 0,
        "wrappedBySource": int(row[1] or 0) if row else 0})
    try:
        report = await _migrate(fast, source, target, checkpoint)
    except Exception as exc:
        # messages of these two are written for operators and hold no secret; of anything
        # else only the class name is recorded
        safe = isinstance(exc, MigrationError | RootUnavailable)
        await record("failed", error_code=type(exc).__name__,
                     error_message=str(exc)[:300] if safe else "the migration failed")
        raise
    await record("complete", response_elements={
        "keyVersions": report.versions, "staged": report.staged,
        "switched": report.switched, "dropped": report.dropped})
    return report


async def _migrate(fast: FastStore, source: RootKeeper, target: RootKeeper,
                   checkpoint: Checkpoint | None) -> MigrationReport:
    async def _noop(step: str) -> None:
        return None

    mark = checkpoint or _noop
    if source.name == target.name:
        raise MigrationError(f"the root keeper is already {target.name!r}")
    others = await fast.all("SELECT DISTINCT keeper FROM kms_key_versions WHERE keeper "
                            "NOT IN (:src, :dst)", src=source.name, dst=target.name)
    if others:
        raise MigrationError("some key material is wrapped by an unknown root keeper "
                             f"{str(others[0][0])[:16]!r}")
    await target.health()
    staged, switched = 0, None
    for _ in range(5):  # versions created while staging (a rotation) are staged next round
        staged += await _stage(fast, source, target, mark)
        await mark("staged")
        switched = await _switch(fast, source.name, target.name)
        if switched is not None:
            break
    if switched is None:
        raise MigrationError("key versions keep appearing under the old root: stop "
                             "`bastion serve` and run the migration again")
    await mark("switched")
    async with fast.transaction() as tx:
        dropped = await tx.run("DELETE FROM kms_root_wrappings WHERE keeper = :src",
                               src=source.name)
    await mark("dropped")
    row = await fast.one("SELECT COUNT(*) FROM kms_key_versions")
    return MigrationReport(source.name, target.name, staged, switched, dropped,
                           int(row[0]) if row else 0)
