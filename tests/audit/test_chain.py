"""Hash chain verification: one case per attack on the stored rows, each naming the exact seq
and kind ``verify_chain`` must report, with and without checkpoints kept elsewhere."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.audit.chain import GENESIS, Fault, Row, StoredRecord, link, rows_from, verify_chain
from bastion.audit.checkpoint import Checkpoint, checkpoint_hash, sign_checkpoint
from bastion.audit.merkle import CompactRange, leaf_hash, root_from_leaf_hashes
from bastion.audit.record import build_record, canonical_bytes

N = 30
KEPT = (10, 20, 30)  # tree sizes of the checkpoints the operator kept
KEY = Ed25519PrivateKey.generate()
KEYS = {"audit-1": KEY.public_key()}
FORGED = canonical_bytes(build_record("CreateUser", event_time=1_700_000_000,
                                      request_parameters={"userName": "mallory"}))


def make_trail(n: int = N) -> list[Row]:
    rows: list[Row] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        body = canonical_bytes(build_record(
            "GetOrder", event_time=1_700_000_000 + seq, request_id=f"req-{seq}",
            user_identity={"type": "User", "userName": "alice"},
            request_parameters={"orderId": f"ord-{seq}"}))
        prev = link(prev, body)
        rows.append((seq, body, prev))
    return rows


def make_checkpoints(rows: list[Row], sizes: tuple[int, ...] = KEPT) -> list[Checkpoint]:
    out, previous = [], GENESIS
    for size in sizes:
        cp = sign_checkpoint(KEY, "audit-1", size,
                             root_from_leaf_hashes([h for _s, _b, h in rows[:size]]),
                             rows[size - 1][2], 1_700_000_000_000 + size, previous)
        out.append(cp)
        previous = checkpoint_hash(cp)
    return out


TRAIL = make_trail()
CHECKPOINTS = make_checkpoints(TRAIL)


def edit(rows: list[Row], seq: int, *, rehash: bool = False) -> list[Row]:
    """Change one body; with ``rehash`` also store the hash recomputed over the new body."""
    out = list(rows)
    _s, body, h = out[seq - 1]
    body = body.replace(b'"alice"', b'"mallory"')
    prev = out[seq - 2][2] if seq > 1 else GENESIS
    out[seq - 1] = (seq, body, link(prev, body) if rehash else h)
    return out


def relink_from(rows: list[Row], seq: int) -> list[Row]:
    """Recompute every hash from ``seq`` on: a consistent rewrite of the tail."""
    out = list(rows[:seq - 1])
    prev = out[-1][2] if out else GENESIS
    for s, body, _h in rows[seq - 1:]:
        prev = link(prev, body)
        out.append((s, body, prev))
    return out


def renumber(rows: list[Row]) -> list[Row]:
    return [(i, body, h) for i, (_s, body, h) in enumerate(rows, 1)]


def delete(rows: list[Row], seq: int) -> list[Row]:
    return [r for r in rows if r[0] != seq]


def insert(rows: list[Row], at: int, row: Row) -> list[Row]:
    out = list(rows)
    out.insert(at, row)
    return out


def swap(rows: list[Row], a: int, b: int) -> list[Row]:
    """Exchange the seq of two rows (the rows keep their bodies and hashes)."""
    out = list(rows)
    ra, rb = out[a - 1], out[b - 1]
    out[a - 1], out[b - 1] = (a, rb[1], rb[2]), (b, ra[1], ra[2])
    return out


def fresh(after: int) -> Row:
    """A forged record linked correctly to the real record ``after``."""
    return (after + 1, FORGED, link(TRAIL[after - 1][2], FORGED))


Attack = Callable[[list[Row]], list[Row]]
ATTACKS: list[tuple[str, Attack, bool, int, str]] = [
    # (id, attack, checkpoints kept, expected seq, expected kind)
    ("edit-body-middle", lambda r: edit(r, 15), True, 15, "modified"),
    ("edit-body-middle-no-checkpoint", lambda r: edit(r, 15), False, 15, "modified"),
    ("edit-body-first", lambda r: edit(r, 1), True, 1, "modified"),
    ("edit-body-last", lambda r: edit(r, 30), True, 30, "modified"),
    ("edit-body-at-checkpoint", lambda r: edit(r, 20), True, 20, "modified"),
    ("edit-body-recompute-hash-middle", lambda r: edit(r, 15, rehash=True), True, 15,
     "modified"),
    ("edit-body-recompute-hash-first", lambda r: edit(r, 1, rehash=True), True, 1, "modified"),
    ("edit-body-recompute-hash-at-checkpoint", lambda r: edit(r, 20, rehash=True), True, 20,
     "modified"),
    ("edit-body-recompute-hash-last", lambda r: edit(r, 30, rehash=True), True, 30,
     "checkpoint_mismatch"),
    ("rewrite-tail-recompute-chain", lambda r: relink_from(edit(r, 15), 15), True, 20,
     "checkpoint_mismatch"),
    ("delete-first", lambda r: delete(r, 1), True, 1, "deleted"),
    ("delete-first-no-checkpoint", lambda r: delete(r, 1), False, 1, "deleted"),
    ("delete-middle", lambda r: delete(r, 15), True, 15, "deleted"),
    ("delete-middle-no-checkpoint", lambda r: delete(r, 15), False, 15, "deleted"),
    ("delete-middle-and-renumber", lambda r: renumber(delete(r, 15)), True, 15, "deleted"),
    ("delete-last", lambda r: delete(r, 30), True, 30, "truncated"),
    ("insert-forged-fresh-hash-renumbered", lambda r: renumber(insert(r, 14, fresh(14))), True,
     15, "inserted"),
    ("insert-forged-fresh-hash-renumbered-no-checkpoint",
     lambda r: renumber(insert(r, 14, fresh(14))), False, 15, "inserted"),
    ("insert-forged-duplicate-seq-before", lambda r: insert(r, 14, fresh(14)), True, 15,
     "inserted"),
    ("insert-forged-duplicate-seq-after", lambda r: insert(r, 15, fresh(14)), True, 15,
     "inserted"),
    ("insert-forged-bad-hash-renumbered",
     lambda r: renumber(insert(r, 14, (15, FORGED, bytes(32)))), False, 15, "inserted"),
    ("insert-fractional-seq", lambda r: insert(r, 14, (14.5, FORGED, bytes(32))),  # type: ignore[arg-type]
     False, 15, "inserted"),
    ("swap-adjacent", lambda r: swap(r, 15, 16), True, 15, "reordered"),
    ("swap-adjacent-no-checkpoint", lambda r: swap(r, 15, 16), False, 15, "reordered"),
    ("swap-distant", lambda r: swap(r, 12, 17), True, 12, "reordered"),
    ("rows-streamed-out-of-order", lambda r: [*r[:15], r[3], *r[15:]], False, 4, "reordered"),
    ("truncate-tail-kept-checkpoint", lambda r: r[:25], True, 26, "truncated"),
    ("truncate-tail-to-a-checkpoint", lambda r: r[:20], True, 21, "truncated"),
]


@pytest.mark.parametrize(("attack", "kept", "seq", "kind"),
                         [a[1:] for a in ATTACKS], ids=[a[0] for a in ATTACKS])
def test_attack_is_pinpointed(attack: Attack, kept: bool, seq: int, kind: str) -> None:
    rows = attack(TRAIL)
    report = verify_chain(rows, checkpoints=CHECKPOINTS if kept else (), public_keys=KEYS)
    assert not report.ok
    assert len(report.faults) == 1
    fault = report.faults[0]
    assert (fault.seq, fault.kind) == (seq, kind), fault


@pytest.mark.parametrize("stop_at_first", [True, False], ids=["first", "all"])
def test_clean_trail(stop_at_first: bool) -> None:
    report = verify_chain(TRAIL, checkpoints=CHECKPOINTS, public_keys=KEYS,
                          stop_at_first=stop_at_first)
    assert report.ok and report.faults == ()
    assert (report.records, report.last_seq, report.last_hash) == (N, N, TRAIL[-1][2])
    assert report.checkpoints_verified == len(KEPT)
    assert report.root_hash == root_from_leaf_hashes([h for _s, _b, h in TRAIL])
    assert report.tree_size == N
    json.dumps(report.to_dict())


def test_link_is_the_rfc9162_leaf_hash_of_prev_and_body() -> None:
    body = b'{"eventName":"Login"}'
    assert link(GENESIS, body) == leaf_hash(GENESIS + body)
    assert link(GENESIS, body) == hashlib.sha256(b"\x00" + bytes(32) + body).digest()


# --- what each attack looks like without the evidence to tell hypotheses apart -----------

@pytest.mark.parametrize(("attack", "seq", "candidates"), [
    (lambda r: edit(r, 15, rehash=True), 16, (15, 16)),
    (lambda r: renumber(delete(r, 15)), 15, (14, 15)),
    (lambda r: edit(r, 15), 15, (14, 15)),
], ids=["recompute-hash", "delete-and-renumber", "edit-body"])
def test_without_a_checkpoint_a_lone_broken_link_names_both_suspects(
        attack: Attack, seq: int, candidates: tuple[int, ...]) -> None:
    """A broken link that the next record repairs fits an edited body (its hash left as it
    was), the previous record rewritten with a recomputed hash, or a deletion followed by
    renumbering. Only a checkpoint tells them apart; without one both suspects are named."""
    report = verify_chain(attack(TRAIL))
    assert [(f.seq, f.kind, f.candidates) for f in report.faults] == \
        [(seq, "modified", candidates)]


@pytest.mark.parametrize("attack", [
    lambda r: delete(r, 30), lambda r: r[:25], lambda r: relink_from(edit(r, 15), 15),
    lambda r: [*r, (31, FORGED, link(r[-1][2], FORGED))],
], ids=["delete-last", "truncate-tail", "rewrite-tail-recompute-chain", "append-forged"])
def test_limits_without_a_kept_checkpoint(attack: Attack) -> None:
    """What a hash chain alone cannot see: a consistent rewrite or cut of the tail, and a
    correctly linked record appended at the end. Checkpoints kept elsewhere close the first
    two (tests above); records after the latest checkpoint are as good as the database."""
    assert verify_chain(attack(TRAIL)).ok


def test_rewrite_names_the_span_between_checkpoints() -> None:
    report = verify_chain(relink_from(edit(TRAIL, 15), 15), checkpoints=CHECKPOINTS)
    fault = report.faults[0]
    assert fault.candidates == tuple(range(11, 21))


def test_every_fault_when_asked() -> None:
    rows = delete(edit(edit(TRAIL, 4), 25), 12)
    report = verify_chain(rows, checkpoints=CHECKPOINTS, public_keys=KEYS, stop_at_first=False)
    assert [(f.seq, f.kind) for f in report.faults] == \
        [(4, "modified"), (12, "deleted"), (25, "modified")]
    first = verify_chain(rows, checkpoints=CHECKPOINTS, public_keys=KEYS)
    assert [(f.seq, f.kind) for f in first.faults] == [(4, "modified")]


def test_no_follow_on_faults_after_a_structural_one() -> None:
    report = verify_chain(swap(TRAIL, 15, 16), checkpoints=CHECKPOINTS, stop_at_first=False)
    assert [(f.seq, f.kind) for f in report.faults] == [(15, "reordered")]


# --- checkpoints as trust anchors ---------------------------------------------------------

def test_forged_checkpoint_is_reported_and_not_trusted() -> None:
    forged = dataclasses.replace(CHECKPOINTS[2], tree_size=40)  # signature no longer fits
    report = verify_chain(TRAIL, checkpoints=[*CHECKPOINTS[:2], forged], public_keys=KEYS,
                          stop_at_first=False)
    assert [(f.seq, f.kind) for f in report.faults] == [(40, "bad_signature")]
    assert report.checkpoints_verified == 2


def test_unknown_key_is_a_bad_signature() -> None:
    other = {"audit-2": Ed25519PrivateKey.generate().public_key()}
    report = verify_chain(TRAIL, checkpoints=CHECKPOINTS, public_keys=other)
    assert [(f.seq, f.kind) for f in report.faults] == [(10, "bad_signature")]


def test_checkpoint_with_a_wrong_root_is_reported() -> None:
    wrong = sign_checkpoint(KEY, "audit-1", 20, bytes(32), TRAIL[19][2], 1, GENESIS)
    report = verify_chain(TRAIL, checkpoints=[wrong], public_keys=KEYS)
    assert [(f.seq, f.kind) for f in report.faults] == [(20, "checkpoint_mismatch")]
    assert "built wrongly" in report.faults[0].detail


def test_empty_trail_with_a_kept_checkpoint_is_truncated() -> None:
    report = verify_chain([], checkpoints=CHECKPOINTS[:1])
    assert [(f.seq, f.kind) for f in report.faults] == [(1, "truncated")]
    assert verify_chain([]).ok


# --- verifying a suffix (after archived segments) -----------------------------------------

def test_suffix_with_its_compact_range_checks_roots() -> None:
    rng = CompactRange()
    rng.extend([h for _s, _b, h in TRAIL[:10]])
    report = verify_chain(TRAIL[10:], start_seq=11, start_prev=TRAIL[9][2],
                          checkpoints=CHECKPOINTS, start_range=rng)
    assert report.ok and report.checkpoints_verified == 3 and report.records == 20
    assert report.root_hash == root_from_leaf_hashes([h for _s, _b, h in TRAIL])


def test_suffix_without_range_checks_last_hashes() -> None:
    report = verify_chain(TRAIL[10:], start_seq=11, start_prev=TRAIL[9][2],
                          checkpoints=CHECKPOINTS)
    assert report.ok and report.checkpoints_verified == 3 and report.root_hash is None
    bad = verify_chain(edit(TRAIL, 25, rehash=True)[10:], start_seq=11, start_prev=TRAIL[9][2],
                       checkpoints=CHECKPOINTS)
    assert [(f.seq, f.kind) for f in bad.faults] == [(26, "modified")]


def test_suffix_with_a_wrong_starting_point() -> None:
    report = verify_chain(TRAIL[10:], start_seq=11, start_prev=bytes([1]) * 32,
                          checkpoints=CHECKPOINTS)
    assert [(f.seq, f.kind) for f in report.faults] == [(11, "checkpoint_mismatch")]


def test_start_range_must_match_start_seq() -> None:
    with pytest.raises(ValueError):
        verify_chain(TRAIL, start_range=CompactRange.from_state(1, [bytes(32)]))


def test_stored_records_and_faults_serialise() -> None:
    records = [StoredRecord(s, b, h) for s, b, h in TRAIL]
    assert rows_from(records) == TRAIL
    fault = Fault(3, "modified", "x", candidates=(2, 3))
    assert fault.to_dict() == {"seq": 3, "kind": "modified", "detail": "x",
                               "candidates": [2, 3]}
