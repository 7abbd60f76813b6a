"""C2SP tlog-tiles layout (https://c2sp.org/tlog-tiles): tile paths, widths and hashes from tiles.

A tile at level L, index N holds the hashes of tree level 8*L (each the MTH of 256**L leaves), node indices
256*N .. 256*N+255, concatenated as 32-byte hashes; a partial tile of width W holds the first W of them.
Level-0 tiles hold leaf hashes. Any perfect subtree hash, and so any proof, can be computed from tiles.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.merkle import EMPTY_ROOT, HASH_SIZE, fold, is_node_range, subtrees

__all__ = [
    "MAX_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "RightEdge",
    "TilePath",
    "entries_path",
    "parse_tile_path",
    "range_hash_from_tiles",
    "subtree_hash",
    "subtree_tiles",
    "tile_path",
    "tile_width",
    "tile_widths",
    "tiles_for_ranges",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63

_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"


@dataclass(frozen=True, slots=True)
class TilePath:
    """A parsed tile or entry-bundle path; width is TILE_WIDTH for a full tile."""

    level: int | Literal["entries"]
    index: int
    width: int = TILE_WIDTH

    def path(self) -> str:
        """Return the canonical path of this tile or entry bundle."""
        if self.level == "entries":
            return entries_path(self.index, self.width)
        return tile_path(self.level, self.index, self.width)


def _index_path(index: int, width: int) -> str:
    if index < 0:
        raise ValueError(f"tile index {index} is negative")
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} is not in 1..{TILE_WIDTH}")
    groups: list[str] = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if index == 0:
            break
    groups.reverse()
    encoded = "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])
    return encoded if width == TILE_WIDTH else f"{encoded}.p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """Return `tile/<L>/<N>[.p/<W>]` for a tile, with N in x-prefixed 3-digit groups."""
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"tile level {level} is not in 0..{MAX_LEVEL}")
    return f"tile/{level}/{_index_path(index, width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """Return `tile/entries/<N>[.p/<W>]` for an entry bundle."""
    return f"tile/entries/{_index_path(index, width)}"


def join_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """A C2SP entry bundle of ``entries``: each as a big-endian 16-bit length, then its bytes."""
    return b"".join(len(data).to_bytes(2, "big") + data for data in entries)


def split_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of a C2SP entry bundle: each is a big-endian 16-bit length, then that many bytes. Raises
    ValueError when the bundle ends inside an entry."""
    entries = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise ValueError("the entry bundle ends inside a length")
        length = int.from_bytes(data[at : at + 2], "big")
        if at + 2 + length > len(data):
            raise ValueError("the entry bundle ends inside an entry")
        entries.append(data[at + 2 : at + 2 + length])
        at += 2 + length
    return entries


_TILE_PATH_RE = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<width>[1-9][0-9]*))?"
)


def parse_tile_path(path: str) -> TilePath:
    """Parse a canonical tile or entry-bundle path; raise ValueError for anything else."""
    m = _TILE_PATH_RE.fullmatch(path)
    if m is None:
        raise ValueError(f"malformed tile path {path!r}")
    groups = m["index"].split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise ValueError(f"tile path {path!r} has a leading zero index group")
    index = int("".join(g.removeprefix("x") for g in groups))
    width = TILE_WIDTH if m["width"] is None else int(m["width"])
    if m["width"] is not None and width >= TILE_WIDTH:
        raise ValueError(f"tile path {path!r} has partial width {width}, outside 1..{TILE_WIDTH - 1}")
    if m["level"] == "entries":
        return TilePath("entries", index, width)
    level = int(m["level"])
    if level > MAX_LEVEL:
        raise ValueError(f"tile path {path!r} has level {level}, outside 0..{MAX_LEVEL}")
    return TilePath(level, index, width)


def tile_width(size: int, level: int, index: int) -> int:
    """Return the width of tile (level, index) in a tree of `size` leaves: 256 if full, 0 if absent."""
    if size < 0 or level < 0 or index < 0:
        raise ValueError("size, level and index must be non-negative")
    nodes = size >> (TILE_HEIGHT * level)
    return max(0, min(TILE_WIDTH, nodes - index * TILE_WIDTH))


def tile_widths(size: int) -> Iterator[tuple[int, int, int]]:
    """Yield (level, index, width) for every tile of a tree of `size` leaves, level by level."""
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    level = 0
    nodes = size
    while nodes:
        full, partial = divmod(nodes, TILE_WIDTH)
        for index in range(full):
            yield level, index, TILE_WIDTH
        if partial:
            yield level, full, partial
        level += 1
        nodes >>= TILE_HEIGHT


def subtree_tiles(height: int, index: int) -> tuple[int, int]:
    """Return the (level, tile index) of the tile whose hashes fold into perfect subtree (height, index)."""
    if height < 0 or index < 0:
        raise ValueError(f"invalid subtree ({height}, {index})")
    level, rest = divmod(height, TILE_HEIGHT)
    return level, (index << rest) >> TILE_HEIGHT


def _perfect_root(hashes: bytes) -> bytes:
    """Return the root of a perfect tree over concatenated 32-byte hashes (a power of two of them)."""
    sha = _sha256
    level = [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
    while len(level) > 1:
        it = iter(level)
        level = [sha(_NODE_PREFIX + left + right).digest() for left, right in zip(it, it, strict=True)]
    return level[0]


def subtree_hash(height: int, index: int, tile_hashes: bytes) -> bytes:
    """Return the hash of perfect subtree (height, index) from the concatenated hashes of its tile.

    tile_hashes is the tile named by subtree_tiles(height, index), full or partial; raises ValueError if
    it does not hold all the hashes the subtree needs.
    """
    if height < 0 or index < 0:
        raise ValueError(f"invalid subtree ({height}, {index})")
    rest = height % TILE_HEIGHT
    start = (index << rest) % TILE_WIDTH
    lo, hi = start * HASH_SIZE, (start + (1 << rest)) * HASH_SIZE
    if len(tile_hashes) % HASH_SIZE or len(tile_hashes) < hi:
        raise ValueError(f"tile of {len(tile_hashes)} bytes cannot give subtree ({height}, {index}): needs {hi} bytes")
    if rest == 0:
        return bytes(tile_hashes[lo:hi])
    return _perfect_root(tile_hashes[lo:hi])


def tiles_for_ranges(ranges: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """Return the (level, tile index) pairs needed to compute the MTH of every leaf range given."""
    return {subtree_tiles(h, i) for lo, hi in ranges for h, i in subtrees(lo, hi)}


def range_hash_from_tiles(lo: int, hi: int, tiles: Mapping[tuple[int, int], bytes]) -> bytes:
    """Return MTH(D[lo:hi]) for a node range, from tiles keyed by (level, tile index).

    Raises ValueError if [lo, hi) is not a node of an RFC 9162 tree, KeyError if a needed tile is missing.
    """
    if not is_node_range(lo, hi):
        raise ValueError(f"[{lo}, {hi}) is not a node of any RFC 9162 tree")
    hashes: list[bytes] = []
    for height, index in subtrees(lo, hi):
        key = subtree_tiles(height, index)
        tile = tiles.get(key)
        if tile is None:
            raise KeyError(f"tile {key} is needed for leaves [{lo}, {hi})")
        hashes.append(subtree_hash(height, index, tile))
    return fold(hashes)


class RightEdge:
    """The rightmost, partial tile at every level of a growing tree, for an appender.

    Besides each partial tile's hashes it keeps the perfect-subtree hashes that the tile's hashes fold into
    (one per set bit of its width), so appending costs about one hash per leaf and root() a few dozen.
    """

    __slots__ = ("_dirty", "_filled", "_size", "_stacks", "_tiles")

    def __init__(self) -> None:
        """Start an empty tree."""
        self._size = 0
        self._tiles: list[bytearray] = []
        self._stacks: list[list[bytes]] = []
        self._dirty: set[int] = set()
        self._filled: dict[tuple[int, int], bytes] = {}

    @classmethod
    def from_tiles(cls, size: int, tiles: Mapping[int, bytes]) -> RightEdge:
        """Resume a tree of `size` leaves from its rightmost stored tile per level.

        tiles[L] must hold exactly the (size >> 8L) % 256 hashes of level L's partial tile; levels without
        a partial tile (width 0) are not read. Raises ValueError on a missing or wrongly sized tile.
        """
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        edge = cls()
        edge._size = size
        level = 0
        nodes = size
        while nodes:
            width = nodes % TILE_WIDTH
            edge._add_level()
            if width:
                data = tiles.get(level)
                if data is None:
                    raise ValueError(f"level {level} partial tile (width {width}) is missing")
                if len(data) != width * HASH_SIZE:
                    raise ValueError(
                        f"level {level} tile is {len(data)} bytes; width {width} needs {width * HASH_SIZE}"
                    )
                for i in range(width):
                    edge._push(level, bytes(data[i * HASH_SIZE : (i + 1) * HASH_SIZE]))
            level += 1
            nodes >>= TILE_HEIGHT
        return edge

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def _add_level(self) -> None:
        self._tiles.append(bytearray())
        self._stacks.append([])

    def _push(self, level: int, h: bytes) -> int:
        """Append h to level's tile and merge subtrees; return the tile's new width."""
        tile = self._tiles[level]
        tile += h
        width = len(tile) >> 5
        stack = self._stacks[level]
        stack.append(h)
        bits = width
        while not bits & 1:
            right = stack.pop()
            stack[-1] = _sha256(_NODE_PREFIX + stack[-1] + right).digest()
            bits >>= 1
        return width

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash, carrying full tiles' roots up to the level above."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
        self._size += 1
        level = 0
        h = leaf_hash
        while True:
            if level == len(self._tiles):
                self._add_level()
            self._dirty.add(level)
            if self._push(level, h) < TILE_WIDTH:
                return
            tile = self._tiles[level]
            index = ((self._size >> (TILE_HEIGHT * level)) >> TILE_HEIGHT) - 1
            self._filled[(level, index)] = bytes(tile)
            tile.clear()
            h = self._stacks[level].pop()
            level += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append many leaf hashes: the same tree and tiles as appending each, but a whole level-0 tile at a time
        where the leaves fill one (about a third of the time per leaf)."""
        i, n = 0, len(leaf_hashes)
        while i < n:
            width = len(self._tiles[0]) >> 5 if self._tiles else 0
            if width == 0 and n - i >= TILE_WIDTH:
                chunk = b"".join(leaf_hashes[i : i + TILE_WIDTH])
                if len(chunk) != TILE_WIDTH * HASH_SIZE:
                    raise ValueError(f"leaf hashes {i}..{i + TILE_WIDTH - 1} are not all {HASH_SIZE} bytes")
                if not self._tiles:
                    self._add_level()
                self._size += TILE_WIDTH
                self._filled[(0, (self._size >> TILE_HEIGHT) - 1)] = chunk
                self._carry(1, _perfect_root(chunk))
                i += TILE_WIDTH
                continue
            # Up to the next tile boundary, one leaf at a time.
            for h in leaf_hashes[i : i + min(TILE_WIDTH - width, n - i)]:
                self.append(h)
                i += 1

    def _carry(self, level: int, h: bytes) -> None:
        """Push the root of a filled tile of the level below into ``level``, carrying on up while tiles fill."""
        while True:
            if level == len(self._tiles):
                self._add_level()
            self._dirty.add(level)
            if self._push(level, h) < TILE_WIDTH:
                return
            tile = self._tiles[level]
            index = ((self._size >> (TILE_HEIGHT * level)) >> TILE_HEIGHT) - 1
            self._filled[(level, index)] = bytes(tile)
            tile.clear()
            h = self._stacks[level].pop()
            level += 1

    def root(self) -> bytes:
        """Return the MTH of the whole tree (EMPTY_ROOT when empty), from the partial tiles only."""
        if self._size == 0:
            return EMPTY_ROOT
        hashes = [h for stack in reversed(self._stacks) for h in stack]
        return fold(hashes)

    def take_dirty(self) -> list[tuple[int, int, bytes]]:
        """Return (level, tile index, tile bytes) for each tile changed since the last call; forget them.

        Tiles that filled up are included with all 256 hashes; partial tiles with their current hashes.
        """
        out = [(level, index, data) for (level, index), data in self._filled.items()]
        for level in self._dirty:
            tile = self._tiles[level]
            if tile:
                index = (self._size >> (TILE_HEIGHT * level)) >> TILE_HEIGHT
                out.append((level, index, bytes(tile)))
        self._filled.clear()
        self._dirty.clear()
        out.sort(key=lambda t: (t[0], t[1]))
        return out
