"""RFC 9162 (RFC 6962) Merkle tree hashing, proof construction and proof verification.

Leaves are hashed as SHA-256(0x00 || data) and interior nodes as SHA-256(0x01 || left || right).
A tree of n > 1 leaves splits at k, the largest power of two below n, so every node of such a tree covers
a leaf range [lo, hi) where lo is a multiple of the smallest power of two >= hi - lo. The hash of such a
range is the right fold of the perfect, aligned subtrees that make it up (see `subtrees` and `fold`), which
is what lets proofs be served from stored subtree hashes (tiles) rather than from a tree held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ProofError",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "is_node_range",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion",
    "subtrees",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(ValueError):
    """A Merkle proof, or the sizes and roots it is checked against, did not verify."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 hash of one leaf: SHA-256(0x00 || data)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH over already-hashed leaves; EMPTY_ROOT for no leaves.

    Pairs neighbours level by level and carries a lone last node up unchanged, which builds exactly the
    RFC tree (split at the largest power of two below n) without recursion.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    sha = _sha256
    level: Sequence[bytes] = leaf_hashes
    while n > 1:
        it = iter(level)
        nxt = [sha(_NODE_PREFIX + left + right).digest() for left, right in zip(it, it, strict=False)]
        if n & 1:
            nxt.append(level[-1])
        level = nxt
        n = len(nxt)
    return level[0]


def _check_range(lo: int, hi: int) -> None:
    if lo < 0 or hi < lo:
        raise ValueError(f"invalid leaf range [{lo}, {hi})")


def subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split [lo, hi) into maximal perfect, aligned subtrees, left to right, as (height, index).

    Subtree (height, index) covers leaves [index * 2**height, (index + 1) * 2**height).
    """
    _check_range(lo, hi)
    out: list[tuple[int, int]] = []
    while lo < hi:
        height = (hi - lo).bit_length() - 1
        if lo:
            height = min(height, (lo & -lo).bit_length() - 1)
        out.append((height, lo >> height))
        lo += 1 << height
    return out


def is_node_range(lo: int, hi: int) -> bool:
    """Return True if [lo, hi) is a node of an RFC 9162 tree, so fold(subtrees(lo, hi)) is its MTH.

    That holds when lo is a multiple of the smallest power of two >= hi - lo (and for empty ranges).
    """
    _check_range(lo, hi)
    n = hi - lo
    return n <= 1 or lo % (1 << (n - 1).bit_length()) == 0


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the subtree hashes of a node range, left to right, into its MTH (a right fold).

    h0, h1, h2 -> node(h0, node(h1, h2)); a single hash is returned as is; no hashes give EMPTY_ROOT.
    """
    if not hashes:
        return EMPTY_ROOT
    sha = _sha256
    acc = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        acc = sha(_NODE_PREFIX + hashes[i] + acc).digest()
    return acc


def _split(n: int) -> int:
    """Return the largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose MTHs form PATH(index, D[size]), in proof order (bottom up).

    Raises ValueError unless 0 <= index < size.
    """
    if index < 0 or index >= size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    lo, hi = 0, size
    top_down: list[tuple[int, int]] = []
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            top_down.append((mid, hi))
            hi = mid
        else:
            top_down.append((lo, mid))
            lo = mid
    top_down.reverse()
    return top_down


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose MTHs form PROOF(old, D[new]), in proof order (bottom up).

    The proof is empty when old == new or old == 0 (there is nothing to prove). Raises ValueError unless
    0 <= old <= new.
    """
    if old < 0 or new < old:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    lo, hi = 0, new
    known = True  # SUBPROOF's flag b: MTH(D[lo:hi]) is the old root itself, so it is not sent
    top_down: list[tuple[int, int]] = []
    while old != hi:
        mid = lo + _split(hi - lo)
        if old <= mid:
            top_down.append((mid, hi))
            hi = mid
        else:
            top_down.append((lo, mid))
            lo = mid
            known = False
    if not known:
        top_down.append((lo, hi))
    top_down.reverse()
    return top_down


def inclusion_proof(index: int, size: int, range_hash: Callable[[int, int], bytes]) -> list[bytes]:
    """Build the inclusion proof for leaf `index` in a tree of `size` from range_hash(lo, hi) MTHs."""
    return [range_hash(lo, hi) for lo, hi in inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, range_hash: Callable[[int, int], bytes]) -> list[bytes]:
    """Build the consistency proof between tree sizes old and new from range_hash(lo, hi) MTHs."""
    return [range_hash(lo, hi) for lo, hi in consistency_ranges(old, new)]


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what}[{i}] is {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that `proof` implies for leaf_hash at `index` in a tree of `size` (RFC 9162 §2.1.3.2).

    Raises ProofError if index >= size or the proof has the wrong shape; the caller compares the root.
    """
    if index < 0 or size < 0 or index >= size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    _check_hashes("inclusion proof", proof)
    want = len(inclusion_ranges(index, size))
    if len(proof) != want:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, expected {want}")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that leaf_hash is leaf `index` of the tree of `size` with `root`; raise ProofError if not."""
    if root_from_inclusion(leaf_hash, index, size, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of size {size}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of size `old` with old_root is a prefix of the one of size `new` with new_root.

    Follows RFC 9162 §2.1.4.2 for 0 < old < new; old == new needs an empty proof and equal roots. A check
    from size 0 proves nothing and is refused. Raises ProofError on any failure.
    """
    if old < 0 or new < old:
        raise ProofError(f"size {old} cannot be a prefix of size {new}")
    if old == 0:
        raise ProofError("consistency with the empty tree proves nothing; old size must be > 0")
    if old == new:
        if proof:
            raise ProofError(f"sizes are equal ({old}) but the proof is not empty")
        if old_root != new_root:
            raise ProofError(f"sizes are equal ({old}) but the roots differ")
        return
    _check_hashes("consistency proof", proof)
    want = len(consistency_ranges(old, new))
    if len(proof) != want:
        raise ProofError(f"consistency proof has {len(proof)} hashes, expected {want}")
    path = list(proof)
    if old & (old - 1) == 0:
        # The old tree is a perfect subtree of the new one; its root is the proof's implicit first node.
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root of size {old}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root of size {new}")
