"""Fault pinpointing: what the verifier does after the first inconsistency.

``chain.verify_chain`` runs a lean loop while every link and checkpoint agrees; at the first
row that does not follow it hands the rest of the rows to ``careful``, which looks up to
``LOOKAHEAD`` rows ahead and at the next checkpoints to tell an edited body from a rewritten
predecessor, a deletion, an insertion or a swap (docs/audit.md, "Verification and fault
pinpointing").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.audit.chain import LOOKAHEAD, Fault, Row, _compare, _State, _truncated, link

if TYPE_CHECKING:
    from bastion.audit.checkpoint import Checkpoint


@dataclass
class _Pending:
    """A broken link at ``seq`` that its successor repairs: either that body was edited (its
    hash left as it was) or the record before it was rewritten with a recomputed hash, or a
    record was deleted and the rest renumbered. A later checkpoint tells which."""

    seq: int
    pos: int
    prev_seq: int
    deadline: int | None = None  # set when a checkpoint's last hash was not where expected


class Rows:
    """The remaining rows, with a pushback window for looking ahead."""

    def __init__(self, it: Iterator[Row], anomaly: tuple[str, Row]) -> None:
        self.it = it
        self.ahead: deque[Row] = deque()
        self.kind, first = anomaly
        if self.kind == "row":
            self.ahead.append(first)

    def peek(self, n: int) -> list[Row]:
        while len(self.ahead) < n:
            nxt = next(self.it, None)
            if nxt is None:
                break
            self.ahead.append(nxt)
        return list(self.ahead)[:n]

    def pop(self) -> Row | None:
        if self.ahead:
            return self.ahead.popleft()
        return next(self.it, None)


def _links(prev: bytes | None, row: Row) -> bool:
    return prev is not None and link(prev, row[1]) == row[2]


def careful(state: _State, rows: Rows, stop_at_first: bool) -> None:
    """Explain the anomaly the fast loop stopped at, then keep walking row by row: resolve a
    pending fault with the next checkpoint, or collect further faults (``stop_at_first`` off).
    Once a fault changed the leaves (anything but an edited body), later checkpoints are only
    asked whether their signed record is still there, nearby: roots cannot match any more."""
    walk = _Walk(state, stop_at_first)
    if rows.kind == "cp":
        cp = state.cps[state.cp_index]
        fault = _checkpoint_fault(state, cp, rows)
        state.cp_index += 1
        walk.add(fault, altered=True)
        if fault.kind == "modified":  # the next record links to the signed hash
            state.prev = cp.last_hash
    skip_until = 0  # rows up to this position belong to an explained fault: no link checks
    resume_prev: bytes | None = None
    while not walk.done():
        row = rows.pop()
        if row is None:
            break
        seq, body, h = row
        pos = state.pos + 1
        if pos > skip_until:
            if resume_prev is not None:
                state.prev, resume_prev = resume_prev, None
            if type(seq) is not int or seq != state.prev_seq + 1 \
                    or link(state.prev, body) != h:
                walk.settle()
                if walk.done():
                    return
                rows.ahead.appendleft(row)
                outcome = _explain(state, rows)
                if isinstance(outcome, _Pending):
                    walk.pending = outcome
                    skip_until, resume_prev = pos, h
                else:
                    fault, span, after = outcome
                    walk.add(fault, altered=fault.kind != "modified")
                    if walk.done():
                        return
                    if fault.kind == "deleted" and type(seq) is int:
                        walk.shift -= seq - (state.prev_seq + 1)  # the gap's records
                    elif fault.kind == "inserted" and span:
                        walk.shift += 1  # the forged row before this one stays in the tree
                    skip_until, resume_prev = pos + span - 1, after
                    if span == 0:  # the row is dropped from the tree (an inserted row)
                        rows.pop()
                        state.records += 1
                        if type(seq) is int and seq > state.prev_seq:
                            state.prev_seq = seq
                        continue
                row = rows.pop()
                assert row is not None
                seq, body, h = row
        state.records += 1
        state.pos = pos
        state.prev2, state.prev = state.prev, h
        state.prev_seq = seq if type(seq) is int else state.prev_seq + 1
        state.last_hash = h
        if state.rng is not None:
            state.rng.append(h)
        walk.accepted(pos, h)
    walk.settle()
    walk.finish()


class _Walk:
    """Fault bookkeeping for the careful loop."""

    def __init__(self, state: _State, stop_at_first: bool) -> None:
        self.state = state
        self.stop_at_first = stop_at_first
        self.pending: _Pending | None = None
        self.altered = False  # a fault changed the leaves: roots no longer comparable
        self.cp_last = {cp.last_hash: cp for cp in state.cps}
        self.found: set[int] = set()  # checkpoints whose signed record was seen off position
        self.awaiting: list[tuple[Checkpoint, int]] = []  # (checkpoint, last position to wait)
        self.shift = 0  # positions gained (+) or lost (-) through faults already named

    def done(self) -> bool:
        return self.pending is None and self.stop_at_first and bool(self.state.faults)

    def add(self, fault: Fault, *, altered: bool) -> None:
        self.state.faults.append(fault)
        self.altered = self.altered or altered

    def settle(self) -> None:
        """Resolve a pending fault with what is known now."""
        if self.pending is not None:
            self.add(_default(self.pending), altered=True)
            self.pending = None

    def accepted(self, pos: int, h: bytes) -> None:
        state = self.state
        seen = self.cp_last.get(h)
        if seen is not None and seen.tree_size != pos:
            self.found.add(id(seen))
            self.awaiting = [(c, d) for c, d in self.awaiting if c is not seen]
            offset = pos - seen.tree_size - self.shift
            if self.pending is not None and offset:
                self.add(_shifted(self.pending, offset), altered=True)
                self.shift += offset
                self.pending = None
        while state.cp_index < len(state.cps) and state.cps[state.cp_index].tree_size == pos:
            cp = state.cps[state.cp_index]
            state.cp_index += 1
            if self.altered:  # roots cannot match; is the signed record still there?
                if h != cp.last_hash and id(cp) not in self.found:
                    self.awaiting.append((cp, pos + LOOKAHEAD))
                continue
            mismatch = _compare(state, cp, h)
            pending = self.pending
            if pending is not None:
                if mismatch == "last_hash":
                    pending.deadline = pos + LOOKAHEAD
                elif mismatch is None:
                    self.add(Fault(pending.seq, "modified",
                                   f"the body of seq {pending.seq} does not match its hash; "
                                   f"the checkpoint of tree size {cp.tree_size} confirms the "
                                   f"stored hashes"), altered=False)
                    self.pending = None
                else:
                    self.add(Fault(pending.prev_seq, "modified",
                                   f"seq {pending.prev_seq} was rewritten with a recomputed "
                                   f"hash: seq {pending.seq} links to a different one, and the "
                                   f"Merkle root at {cp.tree_size} differs from the "
                                   f"checkpoint"), altered=True)
                    self.pending = None
            elif mismatch is not None:
                self.add(_mismatch(state, cp, mismatch), altered=True)
        if self.pending is not None and self.pending.deadline is not None \
                and pos > self.pending.deadline:
            self.settle()
        for cp, deadline in [a for a in self.awaiting if a[1] < pos]:
            self.awaiting.remove((cp, deadline))
            self.add(_missing(cp), altered=True)

    def finish(self) -> None:
        state = self.state
        for cp, _deadline in self.awaiting:
            self.add(_missing(cp), altered=True)
        beyond = [cp for cp in state.cps[state.cp_index:]
                  if cp.tree_size > state.pos and id(cp) not in self.found]
        if beyond and not (self.stop_at_first and state.faults):
            _truncated(state)


def _mismatch(state: _State, cp: Checkpoint, what: str) -> Fault:
    since = max(state.last_good_cp, 0)
    span = range(since + 1, cp.tree_size + 1)
    return Fault(cp.tree_size, "checkpoint_mismatch",
                 f"the {what.replace('_', ' ')} at tree size {cp.tree_size} differs from the "
                 f"checkpoint while the records link to each other: records after seq {since} "
                 f"were rewritten and the chain recomputed",
                 candidates=tuple(span) if len(span) <= 16 else ())


def _missing(cp: Checkpoint) -> Fault:
    return Fault(cp.tree_size, "checkpoint_mismatch",
                 f"the record the checkpoint of tree size {cp.tree_size} signed is not in the "
                 f"trail near that position")


def _default(p: _Pending) -> Fault:
    return Fault(p.seq, "modified",
                 f"seq {p.seq} does not match its hash while seq {p.seq + 1} links to it: its "
                 f"body was edited, or seq {p.prev_seq} was rewritten with a recomputed hash, "
                 f"or a record was deleted and the rest renumbered; no checkpoint after seq "
                 f"{p.prev_seq} tells which", candidates=(p.prev_seq, p.seq))


def _shifted(p: _Pending, offset: int) -> Fault:
    """A checkpoint's last hash found ``offset`` positions away from its tree size."""
    if offset < 0:
        return Fault(p.seq, "deleted",
                     f"{-offset} record(s) missing at seq {p.seq}: a checkpoint's last hash "
                     f"appears {-offset} position(s) early, so later records were renumbered")
    first = p.seq - offset
    return Fault(first, "inserted",
                 f"{offset} extra record(s) before seq {p.seq}: a checkpoint's last hash "
                 f"appears {offset} position(s) late", candidates=tuple(range(first, p.seq)))


def _checkpoint_fault(state: _State, cp: Checkpoint, rows: Rows) -> Fault:
    """The records up to ``cp.tree_size`` link to each other but not to the checkpoint."""
    t = cp.tree_size
    stored = state.prev
    since = state.last_good_cp
    if stored == cp.last_hash:
        return Fault(t, "checkpoint_mismatch",
                     f"the records match the checkpoint's last hash at tree size {t} but not "
                     f"its Merkle root: the checkpoint was built wrongly")
    nxt = rows.peek(1)
    if nxt and _links(cp.last_hash, nxt[0]):
        return Fault(t, "modified",
                     f"seq {t} was rewritten with a recomputed hash: the checkpoint signed a "
                     f"different one and seq {t + 1} still links to that (records after "
                     f"seq {max(since, 0)} may have been rewritten forward to it)",
                     candidates=(t,))
    return _mismatch(state, cp, "last_hash")


def _explain(state: _State, rows: Rows) -> _Pending | tuple[Fault, int, bytes]:
    """Name the fault at the row that does not follow. Returns a pending fault (resolved by a
    later checkpoint) or ``(fault, span, prev_after)``: the fault, how many rows from here it
    covers (0: this row is extra and is dropped) and the hash the row after the span links
    to."""
    window = rows.peek(LOOKAHEAD + 1)
    row, ahead = window[0], window[1:]
    seq, _body, h = row
    e = state.prev_seq + 1
    prev, prev2 = state.prev, state.prev2
    nxt = ahead[0] if ahead else None
    if type(seq) is not int:
        return (Fault(e, "inserted", f"a row with non-integer seq {seq!r} after seq {e - 1}"),
                0, prev)
    if seq == e - 1 and seq >= state.start_seq:
        if _links(prev2, row) and nxt is not None and _links(h, nxt):
            return (Fault(seq, "inserted", f"two rows with seq {seq}: the first (hash "
                          f"{prev.hex()[:16]}) is a forgery linked to seq {seq - 1}; the next "
                          f"record links to the second"), 1, h)
        return (Fault(seq, "inserted", f"two rows with seq {seq}: the second (hash "
                      f"{h.hex()[:16]}) is extra"), 0, prev)
    if seq < e:
        return (Fault(seq, "reordered", f"seq {seq} comes after seq {e - 1}: rows are out of "
                      f"order"), 0, prev)
    if seq > e:
        relinked = " (and the next record was re-linked over the gap)" if _links(prev, row) \
            else ""
        return (Fault(e, "deleted", f"{seq - e} record(s) missing: seq {e} to {seq - 1}"
                      f"{relinked}", candidates=tuple(range(e, min(seq, e + 16)))), 1, h)
    # seq == e and the link is broken
    for m, later in enumerate(ahead):
        if _links(later[2], row):
            partner = next((j for j, r in enumerate(ahead) if _links(prev, r)), None)
            other = ahead[partner][0] if partner is not None else later[0] + 1
            span = (partner if partner is not None else m) + 2
            return (Fault(seq, "reordered", f"seq {seq} belongs after seq {later[0]}: records "
                          f"at seq {seq} and seq {other} were swapped",
                          candidates=(seq, other)), span, h)
    if _links(prev2, row):
        return (Fault(e - 1, "inserted", f"seq {e - 1} (hash {prev.hex()[:16]}) is a forged "
                      f"record: seq {seq} links to seq {e - 2}, skipping it"), 1, h)
    if nxt is not None and _links(prev, nxt):
        return (Fault(seq, "inserted", f"seq {seq} is an extra row: seq {nxt[0]} links to the "
                      f"record before it"), 0, prev)
    if nxt is None or _links(h, nxt):
        pending = _Pending(seq=seq, pos=state.pos + 1, prev_seq=e - 1)
        resolvable = any(cp.tree_size >= e - 1 for cp in state.cps[state.cp_index:])
        if state.last_good_cp == e - 1 and not resolvable:
            return (Fault(seq, "modified", f"the body of seq {seq} does not match its hash "
                          f"(seq {e - 1} is vouched for by a checkpoint)",
                          candidates=(seq,)), 1, h)
        if not resolvable:
            return (_default(pending), 1, h)
        return pending
    return (Fault(seq, "modified", f"seq {seq} does not match its hash and seq {nxt[0]} does "
                  f"not link to it either"), 1, h)
