"""The auditor's own tree: built from entry bundles, it equals the tiles and roots the ledger's appender makes."""

from __future__ import annotations

import struct

import pytest

from services.audit import tree
from shared import logverify, merkle, tiles


def entries(n: int) -> list[bytes]:
    return [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 300)) for i in range(n)]


def bundles(data: list[bytes]) -> list[bytes]:
    out = []
    for lo in range(0, len(data), tiles.TILE_WIDTH):
        out.append(b"".join(struct.pack(">H", len(e)) + e for e in data[lo : lo + tiles.TILE_WIDTH]))
    return out


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 700, 65_536, 65_537])
def test_tiles_built_from_bundles_equal_the_appenders_tiles(size: int) -> None:
    data = entries(size)
    edge = tiles.RightEdge()
    for entry in data:
        edge.append(merkle.leaf_hash(entry))
    expected = {(level, index): hashes for level, index, hashes in edge.take_dirty()}
    hashed = [tree.prepare_bundle(bundle, i, tree.bundle_width(size, i)) for i, bundle in enumerate(bundles(data))]
    assert all(p.error is None and p.array is not None for p in hashed)
    built = tree.build_tiles((p.tile, p.root) for p in hashed)
    assert built == expected
    assert logverify.root_from_tiles(built, size) == edge.root()


def test_root_from_tiles_at_every_smaller_size_is_the_root_of_that_prefix() -> None:
    data = entries(600)
    hashed = [tree.prepare_bundle(b, i, tree.bundle_width(600, i)) for i, b in enumerate(bundles(data))]
    assert all(p.error is None for p in hashed)
    built = tree.build_tiles((p.tile, p.root) for p in hashed)
    leaves = [merkle.leaf_hash(e) for e in data]
    for size in range(0, 601, 7):
        assert logverify.root_from_tiles(built, size) == merkle.root(leaves[:size])


def test_truncated_bundle_is_an_error_not_fewer_entries() -> None:
    bundle = bundles(entries(3))[0]
    with pytest.raises(tree.BundleError):
        tree.split_bundle(bundle[:-1])
    error = tree.prepare_bundle(bundle[:-1], 0, 3).error
    assert error is not None
    assert "truncated" in error
