"""``bastion audit``: verify the trail, sign and export checkpoints, search, tail, export."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import DataDir, JsonOut, _emit, _run, _settings, err, operator, plural

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

# like every command's --json; these always print JSON Lines (one record or event a line)
JsonLinesOut = Annotated[bool, typer.Option("--json", help="JSON Lines (the default; "
                                            "accepted like every command's --json).")]

_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _when(text: str | None) -> int | None:
    """Unix ms from ISO 8601 (``2026-11-29T10:00:00Z``) or a relative age (``15m``)."""
    if text is None:
        return None
    match = _RELATIVE.fullmatch(text)
    try:
        if match:
            age = int(match[1]) * _UNITS[match[2]]
            # an age older than the epoch means "from the start"; beyond 200 years, a typo
            ms = max(0, int((time.time() - age) * 1000)) if age < 200 * 365 * 86400 else None
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms = round(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        ms = None
    if ms is None or not 0 <= ms < 253402300800000:
        err.print(f"[red]error:[/red] not a time: {text!r} (ISO 8601 in years 1970-9999, or "
                  "an age like 30s/15m/2h/7d)")
        raise typer.Exit(2)
    return ms


def _notary(p: Any) -> Any:
    from bastion.audit.notary import Notary

    return Notary(p.fast, p.wrapper, postgres=p.audit.postgres)


@audit_app.command("verify")
def verify(checkpoint: Annotated[list[Path] | None, typer.Option(
               help="A checkpoint file kept elsewhere (repeatable): also proves the tail "
                    "was not truncated.")] = None,
           data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Prove the trail's integrity; pinpoint the first modified, deleted, inserted or
    reordered record. Exit 1 when a fault is found."""
    from bastion.audit.notary import kept_checkpoint

    kept = []
    for path in checkpoint or []:
        try:
            kept.append(kept_checkpoint(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            err.print(f"[red]error:[/red] {path} is not a checkpoint: {exc}")
            raise typer.Exit(2) from None

    async def job(p: Any) -> Any:
        return await _notary(p).verify(kept=kept)

    try:
        report = _run(_settings(data_dir=data_dir), job)
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:  # verify names faults; anything else must not be a traceback
        err.print(f"[red]error:[/red] verification could not finish "
                  f"({type(exc).__name__}): the trail is not proven intact")
        raise typer.Exit(2) from None
    data = report.to_dict()
    if report.ok:
        text = (f"ok: {plural(report.records, 'record')}, "
                f"{plural(report.checkpoints_verified, 'checkpoint')} "
                "verified")
    else:
        text = "\n".join(f"FAULT {f.kind} at seq {f.seq}: {f.detail}" for f in report.faults)
    _emit(as_json, data, text)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint(out: Annotated[Path | None, typer.Option(
                   help="Also write the newest checkpoint to this file (keep it elsewhere).")]
               = None, data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Sign a checkpoint now (if records came since the last) and show the newest."""
    async def job(p: Any) -> Any:
        notary = _notary(p)
        await notary.checkpoint()
        cps = await notary.checkpoints()
        return cps[-1] if cps else None

    cp = _run(_settings(data_dir=data_dir), job)
    if cp is None:
        err.print("the trail is empty: nothing to checkpoint")
        raise typer.Exit(1)
    data = json.loads(cp.to_json())
    if out is not None:
        out.write_text(cp.to_json() + "\n")
    _emit(as_json, data, f"checkpoint: {plural(cp.tree_size, 'record')}, root {cp.root_hash.hex()}")


def _filters(since: str | None, until: str | None, actor: str | None, event: str | None,
             resource: str | None, outcome: str | None,
             request_id: str | None) -> tuple[str, dict[str, Any]]:
    where, params = [], {}
    for clause, key, value in (("event_time >= :since", "since", _when(since)),
                               ("event_time <= :until", "until", _when(until)),
                               ("actor = :actor", "actor", actor),
                               ("event_name = :event", "event", event),
                               ("resource = :resource", "resource", resource),
                               ("outcome = :outcome", "outcome", outcome),
                               ("request_id = :rid", "rid", request_id)):
        if value is not None:
            where.append(clause)
            params[key] = value
    return (" AND ".join(where) or "1 = 1"), params


@audit_app.command("search")
def search(
    since: Annotated[str | None, typer.Option(help="ISO 8601 time or age (15m, 2h, 7d).")]
    = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time or age.")] = None,
    actor: Annotated[str | None, typer.Option(help="Actor ARN (or user name).")] = None,
    event: Annotated[str | None, typer.Option(help="Event name, e.g. LoginFailed.")] = None,
    resource: Annotated[str | None, typer.Option(help="Resource ARN.")] = None,
    outcome: Annotated[str | None, typer.Option(help="success | failure")] = None,
    request_id: Annotated[str | None, typer.Option(help="Correlation id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    ocsf: Annotated[bool, typer.Option(help="Print OCSF events instead.")] = False,
    data_dir: DataDir = None, as_json: JsonLinesOut = True,
) -> None:
    """Records matching every filter, oldest first, as JSON Lines."""
    if outcome not in (None, "success", "failure"):
        err.print("[red]error:[/red] --outcome is success or failure")
        raise typer.Exit(2)
    where, params = _filters(since, until, actor, event, resource, outcome, request_id)
    sql = (f"SELECT seq, body FROM audit_events WHERE {where} "  # noqa: S608 - fixed clauses
           "ORDER BY seq LIMIT :limit")

    async def job(p: Any) -> Any:
        return await p.fast.all(sql, limit=limit, **params)

    _print_rows(_run(_settings(data_dir=data_dir), job), ocsf)


def _print_rows(rows: list[Any], ocsf: bool) -> None:
    from bastion.audit.record import to_ocsf

    out = sys.stdout.buffer  # bodies are RFC 8785 UTF-8: written as stored, whatever locale
    sys.stdout.flush()
    for row in rows:
        body = bytes(row[1])
        out.write(json.dumps(to_ocsf(json.loads(body)), sort_keys=True).encode("ascii")
                  if ocsf else body)
        out.write(b"\n")
    out.flush()


@audit_app.command("export")
def export(ocsf: Annotated[bool, typer.Option(help="OCSF JSON instead of the records.")]
           = False, data_dir: DataDir = None) -> None:
    """The whole trail as JSON Lines on stdout (records as stored, or OCSF events)."""
    async def job(p: Any) -> None:
        after = 0
        while True:
            rows = await p.fast.all("SELECT seq, body FROM audit_events WHERE seq > :s "
                                    "ORDER BY seq LIMIT 5000", s=after)
            if not rows:
                return
            _print_rows(rows, ocsf)
            after = int(rows[-1][0])

    _run(_settings(data_dir=data_dir), job)


@audit_app.command("tail")
def tail(follow: Annotated[bool, typer.Option("-f", "--follow",
                                              help="Keep printing new records.")] = False,
         lines: Annotated[int, typer.Option("-n", min=0, max=100_000)] = 10,
         ocsf: Annotated[bool, typer.Option(help="Print OCSF events.")] = False,
         data_dir: DataDir = None, as_json: JsonLinesOut = True) -> None:
    """The newest records (and, with -f, every new one as it is committed)."""
    async def job(p: Any) -> None:
        rows = await p.fast.all("SELECT seq, body FROM audit_events ORDER BY seq DESC "
                                "LIMIT :n", n=lines)
        rows.reverse()
        _print_rows(rows, ocsf)
        after = int(rows[-1][0]) if rows else 0
        if not rows:
            last = await p.fast.one("SELECT MAX(seq) FROM audit_events")
            after = int(last[0] or 0) if last else 0
        while follow:
            await asyncio.sleep(0.25)
            rows = await p.fast.all("SELECT seq, body FROM audit_events WHERE seq > :s "
                                    "ORDER BY seq LIMIT 5000", s=after)
            if rows:
                _print_rows(rows, ocsf)
                after = int(rows[-1][0])

    try:
        _run(_settings(data_dir=data_dir), job)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@audit_app.command("prove")
def prove(seq: Annotated[int | None, typer.Option(
              help="Inclusion proof of this record in the newest checkpoint's tree.")] = None,
          old_size: Annotated[int | None, typer.Option(
              help="Consistency proof from the checkpoint of this tree size to the newest."
          )] = None,
          data_dir: DataDir = None) -> None:
    """RFC 9162 inclusion or consistency proofs against the newest signed checkpoint
    (printed as JSON, with the checkpoint, and checked before printing)."""
    from bastion.audit import merkle

    if (seq is None) == (old_size is None):
        err.print("[red]error:[/red] give --seq or --old-size")
        raise typer.Exit(2)

    async def job(p: Any) -> dict[str, Any]:
        notary = _notary(p)
        cps = await notary.checkpoints()
        if not cps:
            raise typer.BadParameter("no checkpoint yet: run 'bastion audit checkpoint'")
        cp = cps[-1]
        leaves: list[bytes] = []
        after = 0
        while len(leaves) < cp.tree_size:
            rows = await p.fast.all("SELECT seq, hash FROM audit_events WHERE seq > :s AND "
                                    "seq <= :n ORDER BY seq LIMIT 10000", s=after,
                                    n=cp.tree_size)
            if not rows:
                raise typer.BadParameter("records under the checkpoint are missing: run "
                                         "'bastion audit verify'")
            leaves += [bytes(r[1]) for r in rows]
            after = int(rows[-1][0])
        out: dict[str, Any] = {"checkpoint": json.loads(cp.to_json())}
        if seq is not None:
            if not 1 <= seq <= cp.tree_size:
                raise typer.BadParameter(f"--seq must be 1..{cp.tree_size}")
            proof = merkle.inclusion_proof(seq - 1, leaves)
            assert merkle.verify_inclusion(seq - 1, cp.tree_size, leaves[seq - 1], proof,
                                           cp.root_hash)
            out |= {"seq": seq, "leaf_index": seq - 1, "leaf_hash": leaves[seq - 1].hex(),
                    "inclusion_proof": [h.hex() for h in proof]}
        else:
            old = next((c for c in cps if c.tree_size == old_size), None)
            if old is None:
                raise typer.BadParameter(f"no checkpoint of tree size {old_size}")
            proof = merkle.consistency_proof(old.tree_size, leaves)
            assert merkle.verify_consistency(old.tree_size, cp.tree_size, old.root_hash,
                                             cp.root_hash, proof)
            out |= {"old_checkpoint": json.loads(old.to_json()),
                    "consistency_proof": [h.hex() for h in proof]}
        return out

    try:
        data = _run(_settings(data_dir=data_dir), job)
    except typer.BadParameter as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print(json.dumps(data, indent=2, sort_keys=True))


@audit_app.command("archive")
def archive_cmd(
    out_dir: Annotated[Path, typer.Option("--dir", help="Where segments are written.")],
    older_than: Annotated[str | None, typer.Option(
        help="Archive records older than this age (90d) or ISO time.")] = None,
    upto_seq: Annotated[int | None, typer.Option(help="Archive records up to this seq.")]
    = None,
    data_dir: DataDir = None, as_json: JsonOut = False,
) -> None:
    """Retention: move old records into a verifiable segment file and delete them from the
    database. Never past the newest signed checkpoint (one is signed first)."""
    from bastion.audit.archive import ArchiveError, archive

    if older_than is None and upto_seq is None:
        err.print("[red]error:[/red] give --older-than or --upto-seq")
        raise typer.Exit(2)
    before = _when(older_than)

    async def job(p: Any) -> Any:
        segment = await archive(p.fast, _notary(p), out_dir.resolve(), before_ms=before,
                                upto_seq=upto_seq)
        if segment is not None:
            await p.audit.emit("ArchiveAuditLog", user_identity=operator(),
                               request_parameters={"uptoSeq": segment.last_seq},
                               response_elements={"path": str(segment.path),
                                                  "records": segment.records})
        return segment

    try:
        segment = _run(_settings(data_dir=data_dir), job)
    except ArchiveError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if segment is None:
        _emit(as_json, {"archived": 0}, "nothing to archive")
        return
    _emit(as_json, {"archived": segment.records, "first_seq": segment.first_seq,
                    "last_seq": segment.last_seq, "path": str(segment.path)},
          f"archived seq {segment.first_seq}-{segment.last_seq} to {segment.path}")


@audit_app.command("verify-archive")
def verify_archive(files: Annotated[list[Path], typer.Argument(help="Segment files.")],
                   data_dir: DataDir = None, as_json: JsonOut = False) -> None:
    """Verify archive segments on their own (chain, checkpoint signatures and roots) and
    against the database's record of them. Exit 1 on any fault."""
    from bastion.audit.archive import ArchiveError, verify_segment

    async def job(p: Any) -> list[dict[str, Any]]:
        keys = await _notary(p).public_keys()
        results = []
        for path in files:
            try:
                report = verify_segment(path, keys)
            except (ArchiveError, OSError, ValueError, KeyError) as exc:
                results.append({"file": str(path), "ok": False, "error": str(exc)})
                continue
            data = {"file": str(path), **report.to_dict()}
            row = await p.fast.one("SELECT last_hash, sha256 FROM audit_archives WHERE "
                                   "last_seq = :s", s=report.last_seq)
            if report.ok and row is not None and bytes(row[0]) != report.last_hash:
                data["ok"] = False
                data["error"] = "the segment's end does not match the database's record"
            results.append(data)
        return results

    results = _run(_settings(data_dir=data_dir), job)
    text = "\n".join(
        f"{r['file']}: ok, {plural(r['records'], 'record')}, "
        f"{plural(r['checkpoints_verified'], 'checkpoint')}"
        if r["ok"] else f"{r['file']}: FAULT " + (r.get("error") or "; ".join(
            f"{f['kind']} at seq {f['seq']}" for f in r["faults"])) for r in results)
    _emit(as_json, results, text)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)
