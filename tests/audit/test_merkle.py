"""RFC 9162 §2.1 Merkle trees: published vectors (Certificate Transparency / transparency-dev,
the RFC's own §2.1.5 example) and properties checked by Hypothesis against a direct
transcription of the RFC's recursive definitions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit import merkle
from bastion.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parents[1] / "vectors" / "rfc9162"
CT = json.loads((VECTORS / "transparency-dev-merkle.json").read_text())
EXAMPLE = json.loads((VECTORS / "section-2.1.5-example.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in CT["leaves"]]
ROOTS = [bytes.fromhex(x) for x in CT["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
PROPERTY = settings(max_examples=200, deadline=None, database=None)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, transcribed: split at the largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def hexes(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in items]


# --- published vectors -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "got"), [
    ("empty_tree", EMPTY_ROOT),
    ("empty_leaf", leaf_hash(b"")),
    ("leaf_L123456", leaf_hash(b"L123456")),
    ("node_N123_N456", node_hash(b"N123", b"N456")),
], ids=lambda v: f"rfc6962-hasher-{v}" if isinstance(v, str) else "")
def test_hasher_vectors(name: str, got: bytes) -> None:
    assert got.hex() == CT["hasher"][name]


@pytest.mark.parametrize("size", range(0, 9), ids=lambda n: f"§2.1.1-MTH-{n}-leaves")
def test_roots_of_the_classic_trees(size: int) -> None:
    want = EMPTY_ROOT if size == 0 else ROOTS[size - 1]
    assert root_from_leaf_hashes(LEAVES[:size]) == want
    rng = CompactRange()
    for h in LEAVES[:size]:
        rng.append(h)
    assert rng.root() == want and rng.size == size
    bulk = CompactRange()
    bulk.extend(LEAVES[:size])
    assert bulk.root() == want


@pytest.mark.parametrize("case", CT["inclusion"],
                         ids=lambda c: f"§2.1.3-leaf{c['index']}-of-{c['tree_size']}")
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    index, size, proof = case["index"], case["tree_size"], hexes(case["proof"])
    assert inclusion_proof(index, LEAVES[:size]) == proof
    root = ROOTS[size - 1]
    assert verify_inclusion(index, size, LEAVES[index], proof, root)
    for probe in corrupt_inclusion(index, size, proof, root, LEAVES[index]):
        assert not verify_inclusion(*probe), probe


@pytest.mark.parametrize("case", CT["consistency"],
                         ids=lambda c: f"§2.1.4-{c['old_size']}-to-{c['new_size']}")
def test_consistency_vectors(case: dict[str, Any]) -> None:
    old, new, proof = case["old_size"], case["new_size"], hexes(case["proof"])
    assert consistency_proof(old, LEAVES[:new]) == proof
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    assert verify_consistency(old, new, r1, r2, proof)
    if proof:
        for probe in corrupt_consistency(old, new, r1, r2, proof):
            assert not verify_consistency(*probe), probe


def example_node(name: str) -> bytes:
    leaves = [leaf_hash(f"d{i}".encode()) for i in range(EXAMPLE["tree_size"])]
    start, end = EXAMPLE["nodes"][name]
    return mth(leaves[start:end])


@pytest.mark.parametrize("case", EXAMPLE["inclusion"],
                         ids=lambda c: f"§2.1.5-inclusion-d{c['leaf']}")
def test_rfc_example_inclusion(case: dict[str, Any]) -> None:
    leaves = [leaf_hash(f"d{i}".encode()) for i in range(EXAMPLE["tree_size"])]
    want = [example_node(n) for n in case["proof"]]
    assert inclusion_proof(case["leaf"], leaves) == want
    assert verify_inclusion(case["leaf"], len(leaves), leaves[case["leaf"]], want, mth(leaves))


@pytest.mark.parametrize("case", EXAMPLE["consistency"],
                         ids=lambda c: f"§2.1.5-consistency-{c['old_size']}-to-7")
def test_rfc_example_consistency(case: dict[str, Any]) -> None:
    leaves = [leaf_hash(f"d{i}".encode()) for i in range(EXAMPLE["tree_size"])]
    want = [example_node(n) for n in case["proof"]]
    old = case["old_size"]
    assert consistency_proof(old, leaves) == want
    assert verify_consistency(old, len(leaves), mth(leaves[:old]), mth(leaves), want)


# --- corrupted proofs (the probes transparency-dev's verifier tests use) ------------------

def corrupt_inclusion(index: int, size: int, proof: list[bytes], root: bytes,
                      leaf: bytes) -> list[tuple[int, int, bytes, list[bytes], bytes]]:
    probes = [(index - 1, size, leaf, proof, root), (index + 1, size, leaf, proof, root),
              (index ^ 2, size, leaf, proof, root), (index, size * 2, leaf, proof, root),
              (index, size // 2, leaf, proof, root), (index, size, b"WrongLeaf", proof, root),
              (index, size, leaf, proof, EMPTY_ROOT), (index, size, leaf, proof, SOME_HASH),
              (index, size, leaf, [*proof, b""], root), (index, size, leaf, [*proof, root], root),
              (index, size, leaf, [b"", *proof], root), (index, size, leaf, [root, *proof], root)]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, leaf, flipped, root))
    if proof:
        probes.append((index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        probes.append((index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root))
    return [p for p in probes if p[:2] != (index, size) or p[2:] != (leaf, proof, root)]


def corrupt_consistency(old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes],
                        ) -> list[tuple[int, int, bytes, bytes, list[bytes]]]:
    probes = [(old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof),
              (old ^ 2, new, r1, r2, proof), (old, new * 2, r1, r2, proof),
              (old, new // 2, r1, r2, proof), (old, new, b"WrongRoot", r2, proof),
              (old, new, r1, b"WrongRoot", proof), (old, new, r2, r1, proof),
              (old, new, r1, r2, []), (old, new, r1, r2, [*proof, b""]),
              (old, new, r1, r2, [*proof, r1]), (old, new, r1, r2, [*proof, r2]),
              (old, new, r1, r2, [b"", *proof]), (old, new, r1, r2, [r1, *proof]),
              (old, new, r1, r2, [r2, *proof]), (old, new, r1, r2, [proof[0], *proof]),
              (old, new, r1, r2, proof[:-1])]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((old, new, r1, r2, flipped))
    return probes


@pytest.mark.parametrize(("old", "new", "r1", "r2", "proof", "ok"), [
    (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
    (0, 5, EMPTY_ROOT, ROOTS[4], [], True),
    (1, 1, ROOTS[0], ROOTS[0], [], True),
    (1, 0, ROOTS[0], EMPTY_ROOT, [], False),  # time travel
    (2, 1, ROOTS[1], ROOTS[0], [], False),
    (1, 2, ROOTS[0], ROOTS[1], [], False),  # empty proof
    (1, 1, ROOTS[0], ROOTS[1], [], False),  # same size, other root
    (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),  # roots match, proof not empty
    (0, 1, EMPTY_ROOT, ROOTS[0], [EMPTY_ROOT], False),
    (0, 3, SOME_HASH, ROOTS[2], [], False),  # the empty tree has one root
], ids=["0-0", "0-5", "1-1", "back-1-0", "back-2-1", "empty-proof", "same-size-other-root",
        "extra-node-0-0", "extra-node-0-1", "wrong-empty-root"])
def test_consistency_edge_cases(old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes],
                                ok: bool) -> None:
    assert verify_consistency(old, new, r1, r2, proof) is ok


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 3)],
                         ids=lambda v: str(v))
def test_inclusion_out_of_range(index: int, size: int) -> None:
    assert not verify_inclusion(index, size, SOME_HASH, [], SOME_HASH)
    with pytest.raises(ValueError):
        inclusion_proof(index, [SOME_HASH] * size)


# --- properties ---------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=24), min_size=1, max_size=70).map(
    lambda entries: [leaf_hash(e) for e in entries])


@PROPERTY
@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    root = mth(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(index, len(leaves), leaves[index], proof, root)
    assert merkle.root_from_inclusion_proof(index, len(leaves), leaves[index], proof) == root


@PROPERTY
@given(leaf_lists, st.data())
def test_tampered_inclusion_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    root = mth(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(index, leaves)
    for probe in corrupt_inclusion(index, len(leaves), proof, root, leaves[index]):
        if probe[0] != index and 0 <= probe[0] < len(leaves) \
                and leaves[probe[0]] == leaves[index]:
            continue  # the same entry really is at that index too
        assert not verify_inclusion(*probe), probe[:2]


def test_consistency_for_every_pair_of_sizes_up_to_64() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(64)]
    roots = [EMPTY_ROOT] + [mth(leaves[:n]) for n in range(1, 65)]
    for new in range(0, 65):
        for old in range(0, new + 1):
            proof = consistency_proof(old, leaves[:new])
            assert verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            if proof:
                bad = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
                assert not verify_consistency(old, new, roots[old], roots[new], bad)
                assert not verify_consistency(old, new, roots[old], roots[new], proof[:-1])
            if 0 < old < new:
                assert not verify_consistency(old, new, roots[old - 1] if old > 1 else
                                              SOME_HASH, roots[new], proof)


@PROPERTY
@given(leaf_lists, st.data())
def test_consistency_proofs_of_random_trees(leaves: list[bytes], data: st.DataObject) -> None:
    new = len(leaves)
    old = data.draw(st.integers(0, new))
    proof = consistency_proof(old, leaves)
    r1, r2 = mth(leaves[:old]), mth(leaves)
    assert verify_consistency(old, new, r1, r2, proof)
    if proof:
        for probe in corrupt_consistency(old, new, r1, r2, proof):
            assert not verify_consistency(*probe), probe[:2]


@PROPERTY
@given(leaf_lists)
def test_compact_range_matches_the_reference(leaves: list[bytes]) -> None:
    rng = CompactRange()
    for i, h in enumerate(leaves):
        rng.append(h)
        assert rng.root() == mth(leaves[:i + 1])
        assert len(rng.frontier()) == bin(i + 1).count("1")
    assert root_from_leaf_hashes(leaves) == mth(leaves)
    restored = CompactRange.from_state(rng.size, rng.frontier())
    assert restored.root() == rng.root()


@PROPERTY
@given(leaf_lists, st.lists(st.integers(1, 40), max_size=6))
def test_extend_in_any_chunks_equals_append(leaves: list[bytes], cuts: list[int]) -> None:
    rng, i = CompactRange(), 0
    for cut in cuts:
        rng.extend(leaves[i:i + cut])
        i += cut
    rng.extend(leaves[i:])
    assert rng.root() == mth(leaves) and rng.size == len(leaves)


@pytest.mark.parametrize(("size", "frontier"), [(-1, []), (3, [SOME_HASH]),
                                                (1, [b"short"]), (0, [SOME_HASH])],
                         ids=["negative", "too-few", "short-hash", "too-many"])
def test_compact_range_state_is_checked(size: int, frontier: list[bytes]) -> None:
    with pytest.raises(ValueError):
        CompactRange.from_state(size, frontier)
