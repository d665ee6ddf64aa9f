"""Merkle Tree Hash, inclusion and consistency proofs, and compact ranges.

RFC 9162, Certificate Transparency Version 2.0, §2.1 "Merkle Hash Trees"
(https://www.rfc-editor.org/rfc/rfc9162#section-2.1), with SHA-256 as in RFC 6962. Leaves are
given as leaf hashes (§2.1.1: ``SHA-256(0x00 || entry)``): the audit chain's record hashes
are exactly that, so the tree is built over them without hashing twice.

``CompactRange`` keeps one hash per set bit of the tree size (O(log n) memory) and yields the
root at any size, so a verifier streams a billion records without holding their hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k such that k < n <= 2k (RFC 9162 §2.1.1); n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect_root(level: list[bytes]) -> bytes:
    """Root of a perfect subtree (len(level) is a power of two). Each node hash copies a
    context primed with 0x01: cheaper than a new context over a concatenation."""
    fresh = _sha256(b"\x01").copy
    while len(level) > 1:
        nxt: list[bytes] = []
        add = nxt.append
        for left, right in zip(level[0::2], level[1::2], strict=True):
            ctx = fresh()
            ctx.update(left)
            ctx.update(right)
            add(ctx.digest())
        level = nxt
    return level[0]


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 9162 §2.1.1); the empty tree's hash is SHA-256("").

    Pairing level by level and carrying an odd last node up unchanged gives the same root as
    the RFC's split at the largest power of two below n."""
    if not hashes:
        return EMPTY_ROOT
    sha = _sha256
    level = list(hashes)
    while len(level) > 1:
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest()
               for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class CompactRange:
    """Incremental Merkle tree over leaf hashes [0, size): the roots of the perfect subtrees
    that the binary decomposition of ``size`` names, largest first."""

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._size = 0

    @classmethod
    def from_state(cls, size: int, frontier: Sequence[bytes]) -> CompactRange:
        """Restore a range saved as ``(size, frontier())``: one hash per set bit of size."""
        if size < 0 or len(frontier) != bin(size).count("1"):
            raise ValueError("a compact range has one hash per set bit of its size")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise ValueError("compact range hashes are 32 bytes")
        rng = cls()
        rng._hashes = [bytes(h) for h in frontier]
        rng._size = size
        return rng

    @property
    def size(self) -> int:
        return self._size

    def frontier(self) -> list[bytes]:
        """The perfect subtrees' roots, largest first: with ``size``, all there is to save."""
        return list(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange.from_state(self._size, self._hashes)

    def append(self, leaf: bytes) -> None:
        self._push(0, leaf)

    def _push(self, height: int, subtree: bytes) -> None:
        """Add a perfect subtree of 2**height leaves; ``size`` must be a multiple of it."""
        stack = self._hashes
        bits = self._size >> height
        while bits & 1:
            subtree = _sha256(b"\x01" + stack.pop() + subtree).digest()
            bits >>= 1
        stack.append(subtree)
        self._size += 1 << height

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaf hashes, folding aligned power-of-two runs level by level."""
        i, n = 0, len(leaves)
        while i < n:
            remaining = n - i
            height = remaining.bit_length() - 1
            if self._size:
                height = min(height, (self._size & -self._size).bit_length() - 1)
            width = 1 << height
            self._push(height, _perfect_root(list(leaves[i:i + width])))
            i += width

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        stack = self._hashes
        root = stack[-1]
        for left in reversed(stack[:-1]):
            root = _sha256(b"\x01" + left + root).digest()
        return root


# Compatibility name: the accumulator is the compact range of [0, size).
MerkleAccumulator = CompactRange


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1 for leaf ``index`` in the tree of all the leaves."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}")
    return _path(index, leaf_hashes, 0, n)


def _path(m: int, leaves: Sequence[bytes], lo: int, hi: int) -> list[bytes]:
    # RFC 9162 §2.1.3.1: PATH(0, {d(0)}) = {}; for n > 1 split at k.
    if hi - lo == 1:
        return []
    k = _largest_power_of_two_below(hi - lo)
    if m < k:
        return _path(m, leaves, lo, lo + k) + [root_from_leaf_hashes(leaves[lo + k:hi])]
    return _path(m - k, leaves, lo + k, hi) + [root_from_leaf_hashes(leaves[lo:lo + k])]


def root_from_inclusion_proof(index: int, tree_size: int, leaf: bytes,
                              proof: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof implies, or None if the proof is malformed for the sizes.
    RFC 9162 §2.1.3.2 steps 1-5, without the final comparison."""
    if not 0 <= index < tree_size or len(leaf) != HASH_SIZE:  # step 1
        return None
    fn, sn = index, tree_size - 1  # step 2
    r = leaf  # step 3
    for p in proof:  # step 4
        if len(p) != HASH_SIZE or sn == 0:  # 4a
            return None
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    return r if sn == 0 else None  # step 5: sn must be 0


def verify_inclusion(index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show ``leaf`` at ``index`` in the tree ``root``?"""
    return root_from_inclusion_proof(index, tree_size, leaf, proof) == root


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1 between the first ``old_size`` leaves and all of
    them. Empty when old_size is 0 or n (the RFC defines proofs for 0 < m < n only)."""
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []
    return _subproof(old_size, leaf_hashes, 0, n, True)


def _subproof(m: int, leaves: Sequence[bytes], lo: int, hi: int, b: bool) -> list[bytes]:
    # RFC 9162 §2.1.4.1: SUBPROOF(m, D[n], b).
    n = hi - lo
    if m == n:
        return [] if b else [root_from_leaf_hashes(leaves[lo:hi])]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return _subproof(m, leaves, lo, lo + k, b) + [root_from_leaf_hashes(leaves[lo + k:hi])]
    return _subproof(m - k, leaves, lo + k, hi, False) + [root_from_leaf_hashes(leaves[lo:lo + k])]


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``new_root`` an append-only extension of ``old_root``?

    Equal sizes need equal roots and an empty proof; an empty old tree is consistent with any
    tree when its root is SHA-256("") and the proof is empty."""
    if not 0 <= old_size <= new_size:
        return False
    if any(len(h) != HASH_SIZE for h in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if not path:  # step 1
        return False
    if old_size & (old_size - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:  # 6a
            return False
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0  # step 7


def roots(leaf_hashes: Iterable[bytes]) -> list[bytes]:
    """The root after each leaf (tests and tools): roots()[i] is MTH of leaves [0, i]."""
    rng = CompactRange()
    out = []
    for h in leaf_hashes:
        rng.append(h)
        out.append(rng.root())
    return out
