"""Hash chain over audit records, and its verification with fault pinpointing.

Each record commits to the one before it: ``hash = SHA-256(0x00 || prev_hash || body)``. That
is the RFC 9162 §2.1.1 leaf hash of the entry ``prev_hash || body``, so one hash per record
serves both the chain and the Merkle tree whose leaves are these hashes (``merkle.py``).

Rows store ``(seq, body, hash)``; ``prev_hash`` is the previous row's hash (GENESIS before
seq 1, or an archived segment's last hash). ``verify_chain`` streams rows in seq order with
one SHA-256 per record, checks every signed checkpoint it is given (``last_hash`` and the
Merkle root at ``tree_size``) and, at the first inconsistency, hands over to
``forensics.py``, which looks a few rows ahead and at the checkpoints to name the fault: see
``docs/audit.md`` for the attack-by-attack reasoning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bastion.audit.merkle import CompactRange

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from bastion.audit.checkpoint import Checkpoint

GENESIS: bytes = bytes(32)
LOOKAHEAD = 64  # rows read past a broken link to explain it (swaps farther apart are not paired)
_CHUNK = 4096  # leaf hashes buffered before folding them into the compact range

FaultKind = Literal[
    "modified",  # a body no longer matches its hash, or a record was rewritten with a new hash
    "deleted",  # records missing: a gap in seq, or (with a checkpoint) renumbered away
    "inserted",  # an extra row: duplicate or non-integer seq, or one whose removal heals the chain
    "reordered",  # rows out of order: a record links from one that comes after it
    "truncated",  # fewer records than a trusted checkpoint's tree_size
    "checkpoint_mismatch",  # records agree with each other but not with a signed checkpoint
    "bad_signature",  # a checkpoint whose signature or key does not verify
    "checkpoint_gap",  # a checkpoint that does not link to the one before it
    "checkpoint_rollback",  # checkpoints whose tree size or time goes backwards
    "schema_tampered",  # the audit table is not a plain table with whole indexes (search lies)
]

Row = tuple[int, bytes, bytes]


def link(prev_hash: bytes, body: bytes) -> bytes:
    """The record hash: RFC 9162 §2.1.1 leaf hash of ``prev_hash || body``."""
    return hashlib.sha256(b"\x00" + prev_hash + body).digest()


@dataclass(frozen=True)
class StoredRecord:
    """One stored row. The previous hash is not stored: it is the previous row's ``hash``."""

    seq: int
    body: bytes
    hash: bytes


@dataclass(frozen=True)
class Fault:
    seq: int
    kind: FaultKind
    detail: str
    candidates: tuple[int, ...] = ()  # seqs that fit the evidence equally (empty: ``seq`` alone)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "kind": self.kind, "detail": self.detail}
        if self.candidates:
            out["candidates"] = list(self.candidates)
        return out


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int  # rows read
    last_seq: int  # seq of the last row read (start_seq - 1 if none)
    last_hash: bytes  # its stored hash (start_prev if none)
    faults: tuple[Fault, ...]
    checkpoints_verified: int  # checkpoints whose last_hash (and root, when computed) matched
    root_hash: bytes | None = None  # Merkle root over the rows read, when roots were computed
    tree_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "last_seq": self.last_seq,
                "last_hash": self.last_hash.hex(),
                "faults": [f.to_dict() for f in self.faults],
                "checkpoints_verified": self.checkpoints_verified,
                "root_hash": self.root_hash.hex() if self.root_hash is not None else None,
                "tree_size": self.tree_size}


@dataclass
class _State:
    start_seq: int
    prev: bytes
    prev2: bytes | None
    prev_seq: int
    pos: int  # leaves so far (tree size), counted from seq 1
    rng: CompactRange | None
    cps: list[Checkpoint]
    cp_index: int = 0
    verified: int = 0
    last_good_cp: int = -1  # tree size of the last checkpoint that matched
    records: int = 0
    last_hash: bytes = GENESIS
    faults: list[Fault] = field(default_factory=list)


def verify_chain(rows: Iterable[Row], *, start_seq: int = 1, start_prev: bytes = GENESIS,
                 checkpoints: Iterable[Checkpoint] = (),
                 public_keys: Mapping[str, Ed25519PublicKey] | None = None,
                 start_range: CompactRange | None = None,
                 stop_at_first: bool = True) -> VerifyReport:
    """Verify rows ``(seq, body, hash)`` streamed in seq order from ``start_seq``.

    ``checkpoints`` are trusted tree heads kept elsewhere; with ``public_keys`` each is first
    checked (``bad_signature``) and only good ones are used. Merkle roots are recomputed when
    checkpoints are given: from seq 1, or from ``start_range`` (the compact range of the
    records before ``start_seq``); without it a suffix is checked against ``last_hash`` only.
    Reports the first fault, or every fault found (best effort past the first) when
    ``stop_at_first`` is false.
    """
    state = _State(start_seq=start_seq, prev=start_prev, prev2=None, prev_seq=start_seq - 1,
                   pos=start_seq - 1, rng=None, cps=[], last_hash=start_prev)
    cps = sorted(checkpoints, key=lambda c: c.tree_size)
    unsigned: list[Fault] = []
    if public_keys is not None:
        good = []
        for cp in cps:
            if cp.verify(public_keys):
                good.append(cp)
            else:
                unsigned.append(Fault(cp.tree_size, "bad_signature",
                                      f"checkpoint of tree size {cp.tree_size} (key "
                                      f"{cp.key_id!r}) does not verify; it was not used"))
        cps = good
    if start_range is not None:
        if start_range.size != start_seq - 1:
            raise ValueError("start_range must cover exactly the records before start_seq")
        state.rng = start_range.copy()
    elif cps and start_seq == 1:
        state.rng = CompactRange()
    state.cps = [cp for cp in cps if cp.tree_size >= start_seq - 1]
    _check_start(state)
    if not (stop_at_first and state.faults):
        rows_it = iter(rows)
        anomaly = _fast(state, rows_it)
        if anomaly is not None:  # rare: the forensics are loaded only when needed
            from bastion.audit.forensics import Rows, careful

            careful(state, Rows(rows_it, anomaly), stop_at_first)
        elif state.cp_index < len(state.cps):
            _truncated(state)
    return _report(state, unsigned, first_only=stop_at_first)


def _report(state: _State, unsigned: list[Fault], *, first_only: bool) -> VerifyReport:
    faults = sorted(state.faults + unsigned, key=lambda f: f.seq)
    if first_only:
        faults = faults[:1]
    root = state.rng.root() if state.rng is not None else None
    return VerifyReport(ok=not faults, records=state.records, last_seq=state.prev_seq,
                        last_hash=state.last_hash, faults=tuple(faults),
                        checkpoints_verified=state.verified, root_hash=root,
                        tree_size=state.rng.size if state.rng is not None else None)


def _check_start(state: _State) -> None:
    """Checkpoints at exactly start_seq - 1 vouch for the starting point."""
    while state.cp_index < len(state.cps) and state.cps[state.cp_index].tree_size == state.pos:
        cp = state.cps[state.cp_index]
        state.cp_index += 1
        if _compare(state, cp, state.prev) is not None:
            state.faults.append(Fault(state.start_seq, "checkpoint_mismatch",
                                      f"the starting point does not match the checkpoint of "
                                      f"tree size {cp.tree_size}"))


def _compare(state: _State, cp: Checkpoint, stored: bytes) -> str | None:
    """None when ``cp`` matches the stored hash at its size and the recomputed root."""
    if stored != cp.last_hash:
        return "last_hash"
    if state.rng is not None and state.rng.size == cp.tree_size \
            and state.rng.root() != cp.root_hash:
        return "root"
    state.verified += 1
    state.last_good_cp = cp.tree_size
    return None


def _fast(state: _State, rows: Iterator[Row]) -> tuple[str, Row] | None:
    """The hot loop: one SHA-256 per row while everything agrees. Returns the first anomaly
    as ``(kind, row)``: ``"row"`` for a seq or link break (the row is not consumed),
    ``"cp"`` for a checkpoint mismatch at the row just accepted.

    Kept lean on purpose (bench/audit_verify.py): locals only, a copy of a primed SHA-256
    context per row (cheaper than building a new one over a concatenation), accepted hashes
    buffered (they are the Merkle leaves, and the last two are the look-back
    a broken link needs) and folded into the compact range at checkpoints."""
    fresh = hashlib.sha256(b"\x00").copy  # a context primed with the leaf prefix
    rng = state.rng
    cps = state.cps
    prev, expected = state.prev, state.pos + 1
    tail: list[bytes] = [prev]  # hashes accepted before the current buffer
    buf: list[bytes] = []
    add = buf.append
    stop = _next_stop(state, expected)
    for row in rows:
        seq, body, h = row
        ctx = fresh()
        ctx.update(prev)
        ctx.update(body)
        if seq != expected or ctx.digest() != h:
            _fold(rng, buf)
            _leave(state, tail + buf, expected - 1)
            return ("row", row)
        add(h)
        prev = h
        expected += 1
        if seq == stop:
            _fold(rng, buf)
            while state.cp_index < len(cps) and cps[state.cp_index].tree_size == seq:
                cp = cps[state.cp_index]
                state.cp_index += 1
                if _compare(state, cp, h) is not None:
                    state.cp_index -= 1
                    _leave(state, tail + buf, seq)
                    return ("cp", row)
            tail = (tail + buf)[-2:]
            buf.clear()
            stop = _next_stop(state, expected)
    _fold(rng, buf)
    _leave(state, tail + buf, expected - 1)
    return None


def _leave(state: _State, accepted: list[bytes], last_seq: int) -> None:
    """Hand the fast loop's position over: ``accepted`` ends with the last accepted hash."""
    state.prev = accepted[-1]
    state.prev2 = accepted[-2] if len(accepted) > 1 else state.prev2
    state.prev_seq = state.pos = last_seq
    state.records = last_seq - state.start_seq + 1
    state.last_hash = accepted[-1]


def _next_stop(state: _State, seq: int) -> int:
    """Next seq at which the fast loop pauses: a checkpoint or a full leaf buffer."""
    stop = seq + _CHUNK - 1
    if state.cp_index < len(state.cps):
        stop = min(stop, state.cps[state.cp_index].tree_size)
    return stop


def _fold(rng: CompactRange | None, buf: list[bytes]) -> None:
    if rng is not None and buf:
        rng.extend(buf)


def _truncated(state: _State) -> None:
    cp = state.cps[-1]
    missing = cp.tree_size - state.pos
    state.faults.append(Fault(state.pos + 1, "truncated",
                              f"the trail ends at seq {state.pos} but the checkpoint of tree "
                              f"size {cp.tree_size} covers {missing} more record(s): the tail "
                              f"was removed"))


def rows_from(records: Sequence[StoredRecord]) -> list[Row]:
    """``(seq, body, hash)`` tuples for ``verify_chain`` (tests and tools)."""
    return [(r.seq, r.body, r.hash) for r in records]
