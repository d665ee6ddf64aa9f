"""KMS state on the fast store (SQL for the hot path): keys, wrapped key versions, aliases,
tags. Times are Unix milliseconds. Every change to a key runs in one transaction with its
audit record, so a crash leaves either the old or the new state (a rotation inserts the new
version and moves ``current_version`` together: every ciphertext stays decryptable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.store.fast import Reader, Row, Tx

KEY_COLUMNS = ("id, spec, usage, state, description, policy, created_at, deletion_at, "
               "pending_days, rotation_period, next_rotation_at, current_version")
KEY_SQL = f"SELECT {KEY_COLUMNS} FROM kms_keys WHERE id = :id"  # noqa: S608 - constant
ALIAS_SQL = "SELECT key_id FROM kms_aliases WHERE name = :name"
VERSION_SQL = ("SELECT keeper, material, public_key FROM kms_key_versions "
               "WHERE key_id = :id AND version = :version")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    spec: str
    usage: str
    state: str
    description: str
    policy: str
    created_at: int
    deletion_at: int | None
    pending_days: int | None
    rotation_period: int | None
    next_rotation_at: int | None
    current_version: int


def _record(row: Row) -> KeyRecord:
    return KeyRecord(str(row[0]), row[1], row[2], row[3], row[4], row[5], int(row[6]),
                     None if row[7] is None else int(row[7]),
                     None if row[8] is None else int(row[8]),
                     None if row[9] is None else int(row[9]),
                     None if row[10] is None else int(row[10]), int(row[11]))


async def key(db: Reader, key_id: str) -> KeyRecord | None:
    row = await db.one(KEY_SQL, id=key_id)
    return None if row is None else _record(row)


async def alias_target(db: Reader, name: str) -> str | None:
    row = await db.one(ALIAS_SQL, name=name)
    return None if row is None else str(row[0])


async def other_wrapping(db: Reader, key_id: str, number: int, keeper: str) -> bytes | None:
    """A version's material wrapped by ``keeper`` in ``kms_root_wrappings`` (while a root
    migration is staged or not yet dropped: kms/migrate.py)."""
    row = await db.one("SELECT material FROM kms_root_wrappings WHERE key_id = :id AND "
                       "version = :version AND keeper = :keeper", id=key_id, version=number,
                       keeper=keeper)
    return None if row is None else bytes(row[0])


async def version(db: Reader, key_id: str, number: int) -> tuple[str, bytes, bytes | None] | None:
    row = await db.one(VERSION_SQL, id=key_id, version=number)
    if row is None:
        return None
    return str(row[0]), bytes(row[1]), None if row[2] is None else bytes(row[2])


async def insert_key(tx: Tx, rec: KeyRecord) -> None:
    await tx.run(
        f"INSERT INTO kms_keys ({KEY_COLUMNS}) VALUES (:id, :spec, :usage, :state, "  # noqa: S608
        ":description, :policy, :created_at, :deletion_at, :pending_days, :rotation_period, "
        ":next_rotation_at, :current_version)",
        id=rec.id, spec=rec.spec, usage=rec.usage, state=rec.state,
        description=rec.description, policy=rec.policy, created_at=rec.created_at,
        deletion_at=rec.deletion_at, pending_days=rec.pending_days,
        rotation_period=rec.rotation_period, next_rotation_at=rec.next_rotation_at,
        current_version=rec.current_version)


async def insert_version(tx: Tx, key_id: str, number: int, keeper: str, material: bytes,
                         public_key: bytes | None, rotation_type: str | None,
                         now: int) -> None:
    await tx.run("INSERT INTO kms_key_versions (key_id, version, keeper, material, "
                 "public_key, rotation_type, created_at) VALUES (:key_id, :version, :keeper, "
                 ":material, :public_key, :rotation_type, :created_at)",
                 key_id=key_id, version=number, keeper=keeper, material=material,
                 public_key=public_key, rotation_type=rotation_type, created_at=now)


_UPDATABLE = frozenset({"state", "description", "policy", "deletion_at", "pending_days",
                        "rotation_period", "next_rotation_at", "current_version"})


async def update_key(tx: Tx, key_id: str, **fields: Any) -> int:
    assert fields and set(fields) <= _UPDATABLE
    sets = ", ".join(f"{name} = :{name}" for name in sorted(fields))
    sql = f"UPDATE kms_keys SET {sets} WHERE id = :id"  # noqa: S608 - allowlisted columns
    return await tx.run(sql, id=key_id, **fields)


async def list_keys(db: Reader, after: str, limit: int) -> list[str]:
    rows = await db.all("SELECT id FROM kms_keys WHERE id > :after ORDER BY id LIMIT :limit",
                        after=after, limit=limit)
    return [str(r[0]) for r in rows]


async def list_aliases(db: Reader, after: str, limit: int,
                       key_id: str | None) -> list[tuple[str, str, int, int]]:
    where = "name > :after" + (" AND key_id = :key_id" if key_id else "")
    params: dict[str, Any] = {"after": after, "limit": limit}
    if key_id:
        params["key_id"] = key_id
    sql = (f"SELECT name, key_id, created_at, updated_at FROM kms_aliases "  # noqa: S608
           f"WHERE {where} ORDER BY name LIMIT :limit")  # fixed clauses, bound values
    rows = await db.all(sql, **params)
    return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


async def insert_alias(tx: Tx, name: str, key_id: str, now: int) -> None:
    await tx.run("INSERT INTO kms_aliases (name, key_id, created_at, updated_at) VALUES "
                 "(:name, :key_id, :now, :now)", name=name, key_id=key_id, now=now)


async def retarget_alias(tx: Tx, name: str, key_id: str, now: int) -> int:
    return await tx.run("UPDATE kms_aliases SET key_id = :key_id, updated_at = :now "
                        "WHERE name = :name", name=name, key_id=key_id, now=now)


async def delete_alias(tx: Tx, name: str) -> int:
    return await tx.run("DELETE FROM kms_aliases WHERE name = :name", name=name)


async def tags(db: Reader, key_id: str) -> list[tuple[str, str]]:
    rows = await db.all("SELECT tag_key, tag_value FROM kms_tags WHERE key_id = :id "
                        "ORDER BY tag_key", id=key_id)
    return [(str(r[0]), str(r[1])) for r in rows]


async def put_tags(tx: Tx, key_id: str, pairs: list[tuple[str, str]]) -> None:
    for k, v in pairs:
        await tx.run("INSERT INTO kms_tags (key_id, tag_key, tag_value) VALUES "
                     "(:id, :k, :v) ON CONFLICT (key_id, tag_key) DO UPDATE SET "
                     "tag_value = excluded.tag_value", id=key_id, k=k, v=v)


async def delete_tags(tx: Tx, key_id: str, keys: list[str]) -> None:
    for k in keys:
        await tx.run("DELETE FROM kms_tags WHERE key_id = :id AND tag_key = :k",
                     id=key_id, k=k)


async def rotations(db: Reader, key_id: str) -> list[tuple[int, int, str | None]]:
    rows = await db.all("SELECT version, created_at, rotation_type FROM kms_key_versions "
                        "WHERE key_id = :id ORDER BY version", id=key_id)
    return [(int(r[0]), int(r[1]), r[2]) for r in rows]


async def due_deletions(db: Reader, now: int) -> list[str]:
    rows = await db.all("SELECT id FROM kms_keys WHERE state = 'PendingDeletion' AND "
                        "deletion_at <= :now", now=now)
    return [str(r[0]) for r in rows]


async def due_rotations(db: Reader, now: int) -> list[str]:
    rows = await db.all("SELECT id FROM kms_keys WHERE rotation_period IS NOT NULL AND "
                        "next_rotation_at <= :now AND state IN ('Enabled', 'Disabled')",
                        now=now)
    return [str(r[0]) for r in rows]


async def delete_key(tx: Tx, key_id: str) -> int:
    """Delete a key and everything it owns (its material first: the ciphertexts it
    protected can never be decrypted again)."""
    deleted = await tx.run("DELETE FROM kms_keys WHERE id = :id AND "
                           "state = 'PendingDeletion'", id=key_id)
    if deleted:  # the foreign keys cascade; said again for databases that do not enforce
        await tx.run("DELETE FROM kms_key_versions WHERE key_id = :id", id=key_id)
        await tx.run("DELETE FROM kms_root_wrappings WHERE key_id = :id", id=key_id)
        await tx.run("DELETE FROM kms_aliases WHERE key_id = :id", id=key_id)
        await tx.run("DELETE FROM kms_tags WHERE key_id = :id", id=key_id)
        await tx.run("DELETE FROM kms_grants WHERE key_id = :id", id=key_id)
    return deleted
