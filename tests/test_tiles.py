"""Tests for shared.tiles: C2SP tlog-tiles paths, widths, hashes from tiles, and the appender's right edge."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared import merkle, tiles
from shared.tiles import RightEdge, TilePath

# Big enough for level-2 tiles (65,536 leaves per level-1 tile).
BIG = 70_000
LEAVES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(BIG)]


def _level_hashes(leaves: list[bytes]) -> list[list[bytes]]:
    """Hashes at tree levels 0, 8, 16, ...: each level-(L+1) hash is the root of a full level-L tile."""
    levels = [leaves]
    while len(levels[-1]) >= tiles.TILE_WIDTH:
        below = levels[-1]
        levels.append([merkle.root(below[i : i + 256]) for i in range(0, len(below) - 255, 256)])
    return levels


BIG_LEVELS = _level_hashes(LEAVES)


def _scratch_tiles(size: int) -> dict[tuple[int, int], bytes]:
    """Every tile of the tree of the first `size` LEAVES, computed from scratch."""
    out: dict[tuple[int, int], bytes] = {}
    for level, hashes in enumerate(BIG_LEVELS):
        nodes = hashes[: size >> (8 * level)]
        for n in range(0, len(nodes), 256):
            out[(level, n // 256)] = b"".join(nodes[n : n + 256])
    return out


def _expected_roots(limit: int) -> list[bytes]:
    return [merkle.root(LEAVES[:n]) for n in range(limit + 1)]


SMALL = 2000
ROOTS = _expected_roots(SMALL)


# ---------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 1234067, 256, "tile/0/x001/x234/067"),
        (0, 5, 256, "tile/0/005"),
        (1, 0, 256, "tile/1/000"),
        (2, 1000, 17, "tile/2/x001/000.p/17"),
        (63, 999, 255, "tile/63/999.p/255"),
    ],
)
def test_tile_path_encodes_index_in_x_prefixed_groups(level: int, index: int, width: int, path: str) -> None:
    assert tiles.tile_path(level, index, width) == path
    assert tiles.parse_tile_path(path) == TilePath(level, index, width)


def test_entries_path_uses_the_same_index_encoding() -> None:
    assert tiles.entries_path(1234067) == "tile/entries/x001/x234/067"
    assert tiles.entries_path(5, 3) == "tile/entries/005.p/3"
    assert tiles.parse_tile_path("tile/entries/005.p/3") == TilePath("entries", 5, 3)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile/0/5",
        "tile/0/0005",
        "tile/0/x000/005",
        "tile/0/x1/005",
        "tile/0/001/002",
        "tile/0/x001",
        "tile/0/x001/",
        "tile/00/005",
        "tile/01/005",
        "tile/64/000",
        "tile/-1/000",
        "tile/0/-05",
        "tile/0/005.p/0",
        "tile/0/005.p/256",
        "tile/0/005.p/007",
        "tile/0/005.p/",
        "tile/0/005.p/1x",
        "tile/0/005.p/1/",
        "tile/0/005/",
        "/tile/0/005",
        "tile/0/005\n",
        "tile/0/\u0660\u0660\u0665",
        "tile/ENTRIES/005",
        "tile/entries/005.p/300",
        "tiles/0/005",
        "tile/0/X001/005",
    ],
)
def test_malformed_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="tile path"):
        tiles.parse_tile_path(path)


def test_tile_path_refuses_out_of_range_arguments() -> None:
    with pytest.raises(ValueError, match="level"):
        tiles.tile_path(64, 0)
    with pytest.raises(ValueError, match="negative"):
        tiles.tile_path(0, -1)
    with pytest.raises(ValueError, match="width"):
        tiles.entries_path(0, 0)
    with pytest.raises(ValueError, match="width"):
        tiles.tile_path(0, 0, 257)


paths = st.builds(
    TilePath,
    level=st.one_of(st.integers(0, tiles.MAX_LEVEL), st.just("entries")),
    index=st.integers(0, 10**15),
    width=st.integers(1, 256),
)


@given(paths)
def test_tile_path_round_trips(tp: TilePath) -> None:
    assert tiles.parse_tile_path(tp.path()) == tp


@given(paths, st.data())
def test_mutated_paths_are_refused_or_canonical(tp: TilePath, data: st.DataObject) -> None:
    path = tp.path()
    pos = data.draw(st.integers(0, len(path)), label="pos")
    op = data.draw(st.sampled_from(["insert", "delete", "replace"]), label="op")
    char = data.draw(st.sampled_from("0123456789x/.pe-"), label="char")
    if op == "insert":
        mutated = path[:pos] + char + path[pos:]
    elif op == "delete":
        mutated = path[:pos] + path[pos + 1 :]
    else:
        mutated = path[:pos] + char + path[pos + 1 :]
    try:
        parsed = tiles.parse_tile_path(mutated)
    except ValueError:
        return
    assert parsed.path() == mutated


# --------------------------------------------------------------------------------------------- widths


def test_tile_widths_match_the_spec_example_of_size_70000() -> None:
    partial = [(level, index, width) for level, index, width in tiles.tile_widths(70_000) if width < 256]
    assert partial == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert sum(1 for t in tiles.tile_widths(70_000) if t[0] == 0) == 274
    assert sum(1 for t in tiles.tile_widths(70_000) if t[0] == 1) == 2


def test_tree_of_256_has_a_full_tile_and_a_level_1_tile_of_width_1() -> None:
    assert list(tiles.tile_widths(256)) == [(0, 0, 256), (1, 0, 1)]
    assert list(tiles.tile_widths(0)) == []


@given(st.integers(0, 1 << 40), st.integers(0, 5), st.integers(0, 1 << 20))
def test_tile_width_agrees_with_the_partial_tile_formula(size: int, level: int, index: int) -> None:
    width = tiles.tile_width(size, level, index)
    nodes = size >> (8 * level)
    if index < nodes // 256:
        assert width == 256
    elif index == nodes // 256:
        assert width == nodes % 256
    else:
        assert width == 0


@given(st.integers(0, BIG))
def test_tile_widths_lists_exactly_the_tiles_of_the_tree(size: int) -> None:
    listed = {(level, index): width for level, index, width in tiles.tile_widths(size)}
    scratch = _scratch_tiles(size)
    assert listed == {key: len(data) // 32 for key, data in scratch.items()}
    assert all(tiles.tile_width(size, level, index) == w for (level, index), w in listed.items())


# ------------------------------------------------------------------------------------ hashes from tiles


@pytest.mark.parametrize(
    ("height", "index", "expected"),
    [(0, 0, (0, 0)), (0, 300, (0, 1)), (3, 40, (0, 1)), (8, 5, (1, 0)), (8, 300, (1, 1)), (17, 3, (2, 0))],
)
def test_subtree_tiles_names_the_tile_below_the_subtree(height: int, index: int, expected: tuple[int, int]) -> None:
    assert tiles.subtree_tiles(height, index) == expected


def test_subtree_hash_folds_the_tile_hashes_under_the_subtree() -> None:
    tile = b"".join(LEAVES[:256])
    assert tiles.subtree_hash(7, 1, tile) == merkle.root(LEAVES[128:256])
    level_1 = b"".join(BIG_LEVELS[1][:3])
    assert tiles.subtree_hash(8, 2, level_1) == merkle.root(LEAVES[512:768])
    assert tiles.subtree_hash(9, 0, level_1) == merkle.root(LEAVES[:512])
    assert tiles.subtree_hash(0, 7, tile) == LEAVES[7]
    assert tiles.subtree_hash(2, 3, tile) == merkle.root(LEAVES[12:16])


def test_subtree_hash_refuses_a_tile_too_short_for_the_subtree() -> None:
    with pytest.raises(ValueError, match="cannot give subtree"):
        tiles.subtree_hash(2, 3, b"".join(LEAVES[:15]))


def test_range_hash_from_tiles_refuses_ranges_that_are_no_tree_node() -> None:
    with pytest.raises(ValueError, match="not a node"):
        tiles.range_hash_from_tiles(1, 3, _scratch_tiles(4))
    with pytest.raises(KeyError, match="tile"):
        tiles.range_hash_from_tiles(0, 4, {})


def _check_proofs_from_tiles(size: int, index: int, old: int) -> None:
    ranges = merkle.inclusion_ranges(index, size) + merkle.consistency_ranges(old, size)
    all_tiles = _scratch_tiles(size)
    needed = tiles.tiles_for_ranges(ranges)
    assert needed <= all_tiles.keys()
    fetched = {key: all_tiles[key] for key in needed}
    for lo, hi in ranges:
        assert tiles.range_hash_from_tiles(lo, hi, fetched) == merkle.root(LEAVES[lo:hi])

    def range_hash(lo: int, hi: int) -> bytes:
        return tiles.range_hash_from_tiles(lo, hi, fetched)

    root = merkle.root(LEAVES[:size])
    merkle.verify_inclusion(LEAVES[index], index, size, merkle.inclusion_proof(index, size, range_hash), root)
    proof = merkle.consistency_proof(old, size, range_hash)
    merkle.verify_consistency(old, size, merkle.root(LEAVES[:old]), root, proof)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, SMALL))
def test_proof_range_hashes_from_tiles_equal_root_of_leaf_slice(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    _check_proofs_from_tiles(size, index, old)


@settings(max_examples=10, deadline=None)
@given(st.data(), st.integers(65_536, BIG))
def test_proof_range_hashes_from_level_2_tiles_equal_root_of_leaf_slice(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    _check_proofs_from_tiles(size, index, old)


# ----------------------------------------------------------------------------------------- right edge


@settings(max_examples=30, deadline=None)
@given(st.integers(0, SMALL))
@example(SMALL)
def test_right_edge_root_equals_root_at_every_size(size: int) -> None:
    edge = RightEdge()
    assert edge.root() == merkle.EMPTY_ROOT
    for n in range(size):
        edge.append(LEAVES[n])
        assert edge.size == n + 1
        assert edge.root() == ROOTS[n + 1]


def _upsert(store: dict[tuple[int, int], bytes], edge: RightEdge) -> None:
    for level, index, data in edge.take_dirty():
        store[(level, index)] = data


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 400), max_size=12))
@example([255, 1, 0, 300, 200, 1000, 243])
def test_dirty_tiles_reassemble_into_tiles_computed_from_scratch(batches: list[int]) -> None:
    edge, store = RightEdge(), dict[tuple[int, int], bytes]()
    for batch in batches:
        for _ in range(batch):
            if edge.size == SMALL:
                break
            edge.append(LEAVES[edge.size])
        _upsert(store, edge)
        assert store == _scratch_tiles(edge.size)
        assert edge.take_dirty() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 700), max_size=12), st.integers(0, 300))
@example([256, 512, 1], 0)
@example([255, 257, 600], 1)
def test_extend_makes_the_tree_and_tiles_that_appending_each_makes(batches: list[int], start: int) -> None:
    one, bulk = RightEdge(), RightEdge()
    for leaf in LEAVES[:start]:
        one.append(leaf)
    bulk.extend(LEAVES[:start])
    for batch in batches:
        end = min(SMALL, one.size + batch)
        for leaf in LEAVES[one.size : end]:
            one.append(leaf)
        bulk.extend(LEAVES[bulk.size : end])
        assert (bulk.size, bulk.root()) == (one.size, one.root()) == (end, ROOTS[end])
        assert bulk.take_dirty() == one.take_dirty()


def test_extend_refuses_a_leaf_hash_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="expected 32"):
        RightEdge().extend([*LEAVES[:3], b"short"])
    with pytest.raises(ValueError, match="not all 32 bytes"):
        RightEdge().extend([*LEAVES[:255], b"short", *LEAVES[:10]])


def test_dirty_tiles_reassemble_up_to_level_2() -> None:
    edge, store = RightEdge(), dict[tuple[int, int], bytes]()
    for n, leaf in enumerate(LEAVES, 1):
        edge.append(leaf)
        if n in {256, 65_535, 65_536, 65_537, BIG}:
            _upsert(store, edge)
            assert store == _scratch_tiles(n)
    assert edge.root() == merkle.root(LEAVES)


def _rightmost_tiles(size: int) -> dict[int, bytes]:
    scratch = _scratch_tiles(size)
    out: dict[int, bytes] = {}
    for (level, index), data in sorted(scratch.items()):
        if len(data) < 256 * 32 and index == (size >> (8 * level)) // 256:
            out[level] = data
    return out


@settings(max_examples=80, deadline=None)
@given(st.integers(0, SMALL), st.integers(0, 600))
@example(255, 600)
@example(SMALL - 1, 1)
def test_right_edge_resumes_from_stored_tiles(start: int, more: int) -> None:
    edge = RightEdge.from_tiles(start, _rightmost_tiles(start))
    assert edge.size == start
    assert edge.root() == ROOTS[start]
    store = _scratch_tiles(start)
    end = min(SMALL, start + more)
    for n in range(start, end):
        edge.append(LEAVES[n])
    assert edge.root() == ROOTS[end]
    _upsert(store, edge)
    assert store == _scratch_tiles(end)


def test_right_edge_resumes_from_level_2_tiles() -> None:
    edge = RightEdge.from_tiles(BIG - 5, _rightmost_tiles(BIG - 5))
    for leaf in LEAVES[BIG - 5 :]:
        edge.append(leaf)
    assert edge.root() == merkle.root(LEAVES)


def test_right_edge_refuses_missing_or_wrongly_sized_tiles() -> None:
    with pytest.raises(ValueError, match="missing"):
        RightEdge.from_tiles(300, {0: b"".join(LEAVES[256:300])})
    with pytest.raises(ValueError, match="bytes"):
        RightEdge.from_tiles(300, {0: b"".join(LEAVES[256:299]), 1: LEAVES[0]})
    with pytest.raises(ValueError, match="bytes"):
        RightEdge().append(b"short")


def test_an_entry_bundle_splits_into_its_entries_and_a_truncated_one_is_refused() -> None:
    entries = [b"", b"a", b"x" * 300]
    bundle = b"".join(len(e).to_bytes(2, "big") + e for e in entries)
    assert tiles.split_entry_bundle(bundle) == entries
    for cut in (1, len(bundle) - 1):
        with pytest.raises(ValueError, match="ends inside"):
            tiles.split_entry_bundle(bundle[:cut])
