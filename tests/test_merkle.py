"""Tests for shared.merkle: RFC 9162 hashing, proof ranges, proof building and verification."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import merkle
from shared.merkle import ProofError

VECTORS = Path(__file__).parent / "vectors" / "merkle"
VECTOR_FILES = sorted(VECTORS.rglob("*.json"))

# RFC 6962 test tree used by the Go and C++ Certificate Transparency implementations.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
CT_LEAF_HASHES = [merkle.leaf_hash(d) for d in CT_LEAVES]

# Known proofs over the CT test tree (from the same implementations' test suites).
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}

# A larger deterministic tree for properties.
LEAVES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(2100)]


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _slice_hasher(leaves: list[bytes]) -> Callable[[int, int], bytes]:
    return lambda lo, hi: merkle.root(leaves[lo:hi])


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    flipped = list(proof)
    flipped[i] = bytes([flipped[i][0] ^ 1]) + flipped[i][1:]
    return flipped


def _largest_power_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC's recursive definition (reference for small trees)."""
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _largest_power_below(len(leaves))
    return merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """PATH(m, D[lo:hi]) from the RFC's recursive definition, as leaf ranges."""
    if hi - lo <= 1:
        return []
    k = _largest_power_below(hi - lo)
    if m < k:
        return [*_path(m, lo, lo + k), (lo + k, hi)]
    return [*_path(m - k, lo + k, hi), (lo, lo + k)]


def _subproof(m: int, lo: int, hi: int, known: bool) -> list[tuple[int, int]]:
    """SUBPROOF(m, D[lo:hi], b) from the RFC's recursive definition, as leaf ranges."""
    if m == hi - lo:
        return [] if known else [(lo, hi)]
    k = _largest_power_below(hi - lo)
    if m <= k:
        return [*_subproof(m, lo, lo + k, known), (lo + k, hi)]
    return [*_subproof(m - k, lo + k, hi, False), (lo, lo + k)]


# ---------------------------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[p.relative_to(VECTORS).as_posix() for p in VECTOR_FILES])
def test_transparency_dev_vector(path: Path) -> None:
    v: dict[str, Any] = json.loads(path.read_text())
    proof = [_b64(p) for p in v["proof"] or []]
    kind = path.relative_to(VECTORS).parts[0]
    if kind == "inclusion":

        def check() -> None:
            merkle.verify_inclusion(_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))

    else:
        assert kind == "consistency"

        def check() -> None:
            merkle.verify_consistency(v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)

    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def test_vector_files_are_present() -> None:
    assert len(VECTOR_FILES) >= 190
    assert {p.relative_to(VECTORS).parts[0] for p in VECTOR_FILES} == {"inclusion", "consistency"}


# ------------------------------------------------------------------------------------- RFC 6962 tree


def test_hash_primitives_match_rfc_6962() -> None:
    assert CT_ROOTS[0] == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert merkle.root([]) == CT_ROOTS[0]
    assert merkle.leaf_hash(b"") == CT_ROOTS[1]
    assert merkle.node_hash(CT_LEAF_HASHES[0], CT_LEAF_HASHES[1]) == CT_ROOTS[2]


@pytest.mark.parametrize("size", range(9))
def test_root_of_ct_tree_matches_known_root(size: int) -> None:
    assert merkle.root(CT_LEAF_HASHES[:size]) == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size"), list(CT_INCLUSION))
def test_inclusion_proof_matches_known_proof(index: int, size: int) -> None:
    got = merkle.inclusion_proof(index, size, _slice_hasher(CT_LEAF_HASHES))
    assert [h.hex() for h in got] == CT_INCLUSION[(index, size)]


@pytest.mark.parametrize(("old", "new"), list(CT_CONSISTENCY))
def test_consistency_proof_matches_known_proof(old: int, new: int) -> None:
    got = merkle.consistency_proof(old, new, _slice_hasher(CT_LEAF_HASHES))
    assert [h.hex() for h in got] == CT_CONSISTENCY[(old, new)]


CT_INCLUSION_PAIRS = [(i, n) for n in range(1, 9) for i in range(n)]
CT_CONSISTENCY_PAIRS = [(m, n) for n in range(1, 9) for m in range(1, n + 1)]


@pytest.mark.parametrize(("index", "size"), CT_INCLUSION_PAIRS)
def test_generated_inclusion_proof_verifies_and_tampering_is_refused(index: int, size: int) -> None:
    proof = merkle.inclusion_proof(index, size, _slice_hasher(CT_LEAF_HASHES))
    leaf, root = CT_LEAF_HASHES[index], CT_ROOTS[size]
    merkle.verify_inclusion(leaf, index, size, proof, root)
    for i in range(len(proof)):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaf, index, size, _flip(proof, i), root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(_flip([leaf], 0)[0], index, size, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf, index, size, proof, _flip([root], 0)[0])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf, size, size, proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaf, index, size, [*proof, proof[0] if proof else leaf], root)


@pytest.mark.parametrize(("old", "new"), CT_CONSISTENCY_PAIRS)
def test_generated_consistency_proof_verifies_and_tampering_is_refused(old: int, new: int) -> None:
    proof = merkle.consistency_proof(old, new, _slice_hasher(CT_LEAF_HASHES))
    old_root, new_root = CT_ROOTS[old], CT_ROOTS[new]
    merkle.verify_consistency(old, new, old_root, new_root, proof)
    for i in range(len(proof)):
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, _flip(proof, i))
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, _flip([old_root], 0)[0], new_root, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, old_root, _flip([new_root], 0)[0], proof)
    if proof:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, proof[:-1])


# ----------------------------------------------------------------------------------- ranges and folds


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 0, []),
        (0, 1, [(0, 0)]),
        (0, 7, [(2, 0), (1, 2), (0, 6)]),
        (8, 13, [(2, 2), (0, 12)]),
        (1, 3, [(0, 1), (0, 2)]),
        (3, 16, [(0, 3), (2, 1), (3, 1)]),
    ],
)
def test_subtrees_splits_into_maximal_aligned_perfect_subtrees(
    lo: int, hi: int, expected: list[tuple[int, int]]
) -> None:
    assert merkle.subtrees(lo, hi) == expected


def test_fold_is_a_right_fold() -> None:
    a, b, c = CT_LEAF_HASHES[:3]
    assert merkle.fold([a, b, c]) == merkle.node_hash(a, merkle.node_hash(b, c))
    assert merkle.fold([a]) == a
    assert merkle.fold([]) == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 70))
def test_root_matches_recursive_definition(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == _mth(LEAVES[:size])


@pytest.mark.parametrize("size", range(1, 40))
def test_proof_ranges_match_recursive_definitions(size: int) -> None:
    for index in range(size):
        assert merkle.inclusion_ranges(index, size) == _path(index, 0, size)
    for old in range(1, size):
        assert merkle.consistency_ranges(old, size) == _subproof(old, 0, size, True)


@pytest.mark.parametrize(("lo", "hi"), [(0, 5), (4, 7), (8, 16), (96, 101), (0, 0), (5, 6)])
def test_fold_of_subtrees_gives_mth_of_node_range(lo: int, hi: int) -> None:
    assert merkle.is_node_range(lo, hi)
    hashes = [merkle.root(LEAVES[i << h : (i + 1) << h]) for h, i in merkle.subtrees(lo, hi)]
    assert merkle.fold(hashes) == merkle.root(LEAVES[lo:hi])


@pytest.mark.parametrize(("lo", "hi"), [(1, 3), (2, 5), (4, 9), (3, 5)])
def test_ranges_that_are_no_tree_node_are_recognised(lo: int, hi: int) -> None:
    assert not merkle.is_node_range(lo, hi)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_ranges(-1, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_ranges(6, 5)
    with pytest.raises(ValueError, match="invalid leaf range"):
        merkle.subtrees(4, 3)


def test_empty_consistency_proofs_where_the_rfc_has_nothing_to_prove() -> None:
    assert merkle.consistency_ranges(0, 0) == []
    assert merkle.consistency_ranges(0, 9) == []
    assert merkle.consistency_ranges(9, 9) == []


def test_consistency_from_the_empty_tree_is_refused() -> None:
    with pytest.raises(ProofError, match="empty tree"):
        merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, CT_ROOTS[3], [])
    with pytest.raises(ProofError, match="empty tree"):
        merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])


def test_root_from_inclusion_returns_the_implied_root() -> None:
    proof = merkle.inclusion_proof(3, 7, _slice_hasher(CT_LEAF_HASHES))
    assert merkle.root_from_inclusion(CT_LEAF_HASHES[3], 3, 7, proof) == CT_ROOTS[7]


def test_proof_hashes_of_the_wrong_length_are_refused() -> None:
    proof = merkle.inclusion_proof(2, 5, _slice_hasher(CT_LEAF_HASHES))
    with pytest.raises(ProofError, match="bytes"):
        merkle.verify_inclusion(CT_LEAF_HASHES[2], 2, 5, [proof[0][:31], *proof[1:]], CT_ROOTS[5])


# ------------------------------------------------------------------------------------------ properties


@settings(max_examples=200, deadline=None)
@given(data=st.data(), size=st.integers(1, len(LEAVES)))
def test_random_proofs_verify_against_root(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    hasher = _slice_hasher(LEAVES)
    new_root, old_root = merkle.root(LEAVES[:size]), merkle.root(LEAVES[:old])
    for lo, hi in merkle.inclusion_ranges(index, size) + merkle.consistency_ranges(old, size):
        assert merkle.is_node_range(lo, hi)
        assert 0 <= lo < hi <= size
    merkle.verify_inclusion(LEAVES[index], index, size, merkle.inclusion_proof(index, size, hasher), new_root)
    proof = merkle.consistency_proof(old, size, hasher)
    merkle.verify_consistency(old, size, old_root, new_root, proof)
    if proof:
        with pytest.raises(ProofError):
            merkle.verify_consistency(old, size, old_root, new_root, _flip(proof, len(proof) - 1))
