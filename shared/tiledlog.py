"""Serving a log stored as C2SP tlog-tiles: hash tiles, entry bundles, inclusion and consistency proofs and
C2SP tlog-proof bundles, all read from the stored tiles and entries of a tree of a given size.

One implementation for every log a node serves: our ledger's own (services/ledger/tlog.py) and the verified
copies of neighbours' logs the federation keeps (services/federation/copies.py). Where the tiles and entries are
stored is the caller's: it passes a ``StoredLog``.
"""

from __future__ import annotations

import base64
from typing import Protocol

from shared import merkle, tiles
from shared.errors import Invalid, NotFound

TileKey = tuple[int, int]

# C2SP tlog-tiles caching: a full tile or entry bundle never changes; a partial one gives way to a wider one as the
# log grows, as the checkpoint gives way to the next, so a cache may keep those only briefly.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
BRIEF_CACHE = "public, max-age=5"


class StoredLog(Protocol):
    """Where a log's hash tiles and entries are read from (one connection, one log)."""

    async def tiles(self, keys: set[TileKey]) -> dict[TileKey, bytes]:
        """The stored hash tiles ``keys`` (level, index); absent ones are left out."""
        ...

    async def tile(self, level: int, index: int) -> bytes | None:
        """One stored hash tile, as wide as it is stored."""
        ...

    async def entries(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end) as stored."""
        ...

    async def entry_bundle(self, start: int, width: int) -> bytes | None:
        """Entries [start, start + width) as a C2SP entry bundle, or None unless the log holds all of them."""
        ...


def check_size(size: int, head: int, what: str) -> None:
    """Refuse a size outside a log of ``head`` entries."""
    if not 0 <= size <= head:
        raise Invalid(f"{what} {size} is outside the log (its size is {head})", log_size=head)


def prefix_root(size: int, stored: dict[TileKey, bytes]) -> bytes:
    """The root of the first ``size`` leaves, from tiles holding ``merkle.subtrees(0, size)``."""
    if size == 0:
        return merkle.EMPTY_ROOT
    return merkle.fold(
        [tiles.subtree_hash(h, i, stored[tiles.subtree_tiles(h, i)]) for h, i in merkle.subtrees(0, size)]
    )


async def _hashes_for(log: StoredLog, ranges: list[tuple[int, int]]) -> dict[TileKey, bytes]:
    return await log.tiles(tiles.tiles_for_ranges(ranges))


async def root_at(log: StoredLog, size: int) -> bytes:
    """The tree root after the first ``size`` entries."""
    stored = await _hashes_for(log, [(0, size)] if size else [])
    return prefix_root(size, stored)


async def inclusion_proof(log: StoredLog, head: int, index: int, size: int) -> tuple[list[bytes], bytes, bytes]:
    """Return (proof, leaf hash, root at size) for entry ``index`` in the tree of ``size`` entries, in a log of
    ``head`` entries."""
    check_size(size, head, "tree size")
    if not 0 <= index < size:
        raise Invalid(f"index {index} is not below the tree size {size}")
    ranges = merkle.inclusion_ranges(index, size)
    stored = await _hashes_for(log, [*ranges, (index, index + 1), (0, size)])
    proof = [tiles.range_hash_from_tiles(lo, hi, stored) for lo, hi in ranges]
    leaf = tiles.range_hash_from_tiles(index, index + 1, stored)
    return proof, leaf, prefix_root(size, stored)


async def consistency_proof(log: StoredLog, head: int, old: int, new: int) -> tuple[list[bytes], bytes, bytes]:
    """Return (proof, old root, new root) showing the tree of ``old`` entries is a prefix of ``new``, in a log of
    ``head`` entries."""
    check_size(new, head, "tree size")
    if not 0 <= old <= new:
        raise Invalid(f"old size {old} must be between 0 and the new size {new}")
    ranges = merkle.consistency_ranges(old, new)
    stored = await _hashes_for(log, [*ranges, (0, old), (0, new)])
    proof = [tiles.range_hash_from_tiles(lo, hi, stored) for lo, hi in ranges]
    return proof, prefix_root(old, stored), prefix_root(new, stored)


async def proof_bundle(log: StoredLog, index: int, checkpoint: tuple[int, bytes] | None) -> str:
    """A C2SP tlog-proof for one entry under ``checkpoint`` (size, signed note); the entry's bytes ride in
    ``extra``."""
    if checkpoint is None or index >= checkpoint[0] or index < 0:
        raise NotFound(f"entry {index} is not covered by a checkpoint yet")
    size, note = checkpoint
    proof, _, _ = await inclusion_proof(log, size, index, size)
    [data] = await log.entries(index, index + 1)
    lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(data).decode(), f"index {index}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n\n" + note.decode()


async def tile_bytes(log: StoredLog, path: str) -> bytes:
    """Serve a C2SP tlog-tiles path: a hash tile or an entry bundle, full or partial (found only once the log holds
    all it covers: entries, tiles and the head are stored in one transaction, so the head need not be read)."""
    try:
        where = tiles.parse_tile_path(path)
    except ValueError as exc:
        raise NotFound(f"no such tile: {exc}") from None
    if where.level == "entries":
        start = where.index * tiles.TILE_WIDTH
        bundle = await log.entry_bundle(start, where.width)
        if bundle is None:
            raise NotFound(f"entries {start}..{start + where.width - 1} are not all in the log yet")
        return bundle
    stored = await log.tile(where.level, where.index)
    if stored is None or len(stored) < where.width * merkle.HASH_SIZE:
        raise NotFound(f"tile {path} does not exist (yet)")
    return stored[: where.width * merkle.HASH_SIZE]


def tile_cache_control(path: str) -> str:
    """The Cache-Control of a tile or entry bundle served at ``path``: for good if it is full, briefly if partial."""
    try:
        full = tiles.parse_tile_path(path).width == tiles.TILE_WIDTH
    except ValueError:
        full = False
    return IMMUTABLE_CACHE if full else BRIEF_CACHE
