"""Entry bundles, made ready for the replay and hashed into tiles: leaf hashes from C2SP tlog-tiles entry bundles,
then every tile above.

The auditor rebuilds the whole tree as tiles (keyed by level and index, exactly as C2SP tlog-tiles stores them),
so the root at any size, any proof, and any comparison with the tiles a log serves all come from shared/tiles.py.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from shared import merkle, tiles

TILE_BYTES = tiles.TILE_WIDTH * merkle.HASH_SIZE

_sha256 = hashlib.sha256


class BundleError(ValueError):
    """An entry bundle is missing, truncated, or holds another number of entries than its path says."""


def bundle_count(size: int) -> int:
    """Number of entry bundles (full and partial) of a log of ``size`` entries."""
    return -(-size // tiles.TILE_WIDTH)


def bundle_width(size: int, index: int) -> int:
    """Entries in bundle ``index`` of a log of ``size`` entries (256 unless it is the last, partial one)."""
    return min(tiles.TILE_WIDTH, size - index * tiles.TILE_WIDTH)


def read_bundle(root: str | Path, index: int, width: int) -> bytes:
    """The bytes of entry bundle ``index`` with ``width`` entries under directory ``root``.

    A partial bundle may also be read as the prefix of the full bundle with the same index (C2SP tlog-tiles
    allows either), so a cache that already holds the full bundle serves a smaller checkpoint too.
    """
    try:
        return read_file(f"{root}/{tiles.entries_path(index, width)}")
    except FileNotFoundError:
        if width == tiles.TILE_WIDTH:
            raise BundleError(f"{tiles.entries_path(index, width)} is missing") from None
    try:
        data = read_file(f"{root}/{tiles.entries_path(index)}")
    except FileNotFoundError:
        raise BundleError(f"{tiles.entries_path(index, width)} is missing") from None
    p = 0
    for _ in range(width):
        if p + 2 > len(data):
            break
        p += 2 + ((data[p] << 8) | data[p + 1])
    return data[:p]


def read_file(path: str) -> bytes:
    """A whole file's bytes (unbuffered, from a plain path: a few thousand files are read per million entries, and
    ``Path.read_bytes`` spends about as long on the path as on the read)."""
    with open(path, "rb", buffering=0) as f:
        return f.read()


def split_bundle(data: bytes) -> list[bytes]:
    """The entries of a bundle (each: big-endian uint16 length, then its bytes), in order.

    Raises BundleError if the last entry runs past the end of the bundle.
    """
    out: list[bytes] = []
    add = out.append
    p = 0
    end = len(data)
    while p + 2 <= end:
        q = p + 2 + ((data[p] << 8) | data[p + 1])
        add(data[p + 2 : q])
        p = q
    if p != end:
        raise BundleError(f"bundle is truncated in entry {len(out) - (p > end)}")
    return out


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """The RFC 9162 leaf hash, SHA-256(0x00 || entry), of each entry."""
    sha = _sha256
    prefix = b"\x00"
    return [sha(prefix + entry).digest() for entry in entries]


class Prepared(NamedTuple):
    """An entry bundle made ready for the replay."""

    array: bytes | memoryview | None  # the entries as one JSON array (see json_array), when it can be trusted
    tile: bytes  # concatenated leaf hashes
    root: bytes | None  # root of the tile, when it is full
    error: str | None
    # When the log's own level-0 hash tiles are compared too: whether the stored tile equals ``tile`` (None: there is
    # no stored tile, or none was compared).
    same: bool | None = None


_raw_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def json_array(entries: list[bytes]) -> bytes | None:
    """The entries as one JSON array, when decoding it is the same as decoding each entry alone; None otherwise.

    That holds only if every entry is exactly one JSON value: the array is split into raw values, and it is handed
    on only if their lengths are the entries' lengths.
    """
    if not entries:
        return None
    array = b"".join((b"[", b",".join(entries), b"]"))
    try:
        if list(map(len, _raw_decoder.decode(array))) != list(map(len, entries)):
            return None
    except msgspec.DecodeError:
        return None
    return array


def prepare_bundle(data: bytes, index: int, width: int) -> Prepared:
    """Split, hash and frame one entry bundle (``index``, ``width`` entries) for the replay.

    The leaf hashes are of the entries' exact bytes; the JSON array (see ``json_array``) lets the replay decode the
    whole bundle in one call.
    """
    try:
        entries = split_bundle(data)
    except BundleError as exc:
        return Prepared(None, b"", None, f"{tiles.entries_path(index, width)}: {exc}")
    leaves = leaf_hashes(entries)
    error = None
    if len(leaves) != width:
        error = f"{tiles.entries_path(index, width)} holds {len(leaves)} entries, not {width}"
    root = merkle.root(leaves) if len(leaves) == tiles.TILE_WIDTH else None
    return Prepared(json_array(entries), b"".join(leaves), root, error)


def prepare_bundles(root: str, first: int, stop: int, size: int, compare: bool) -> list[Prepared]:
    """``prepare_bundle`` for bundles [first, stop) of a log of ``size`` entries stored under ``root``; with
    ``compare``, each level-0 hash tile stored there is compared with the one computed."""
    return list(_prepare_each(root, first, stop, size, compare))


def _prepare_each(root: str, first: int, stop: int, size: int, compare: bool) -> Iterator[Prepared]:
    for index in range(first, stop):
        width = bundle_width(size, index)
        try:
            data = read_bundle(root, index, width)
        except BundleError as exc:
            yield Prepared(None, b"", None, str(exc))
            continue
        prepared = prepare_bundle(data, index, width)
        if compare:
            try:
                stored = read_file(f"{root}/{tiles.tile_path(0, index, width)}")
            except FileNotFoundError:
                pass
            else:
                prepared = prepared._replace(same=stored == prepared.tile)
        yield prepared


Spilled = list[tuple[int, int, bytes | None, str | None, bool | None]]


def prepare_bundles_to(spill: str, root: str, first: int, stop: int, size: int, compare: bool) -> Spilled:
    """``prepare_bundles`` in a worker process, its arrays and tiles written to the file ``spill``.

    A worker's result passes through a pipe that the parent reads only when it holds the GIL, which its replay
    rarely lets go of: a big result would keep the worker waiting, while a file is mapped into the parent's memory
    in one call. Each bundle is written as soon as it is prepared, so the worker reuses the same memory for every
    bundle. Returns, per bundle, the sizes of its array (-1: none) and tile in the file, its tile root, its error
    and ``same``.
    """
    out: Spilled = []
    with open(spill, "wb") as f:
        for p in _prepare_each(root, first, stop, size, compare):
            if p.array is not None:
                f.write(p.array)
            f.write(p.tile)
            out.append((-1 if p.array is None else len(p.array), len(p.tile), p.root, p.error, p.same))
    return out


def prepare_chunks(
    directory: str,
    size: int,
    compare: bool,
    chunks: list[tuple[int, int]],
    spill: str,
    claims: Any,
    out: Connection,
) -> None:
    """A worker process: prepare the next chunk of bundles nobody has claimed, until none is left.

    ``claims`` (a shared value with its lock) holds the next chunk to take; the auditor's own process takes chunks
    from it too while it would otherwise wait. Each chunk goes to the file ``spill/<first bundle>`` and is reported
    on ``out``; ``None`` says the worker is done.
    """
    while True:
        with claims.get_lock():
            position = claims.value
            if position >= len(chunks):
                break
            claims.value = position + 1
        lo, hi = chunks[position]
        out.send((position, prepare_bundles_to(f"{spill}/{lo}", directory, lo, hi, size, compare)))
    out.send(None)
    out.close()


def unspill(sizes: Spilled, spill: Path) -> list[Prepared]:
    """The bundles that ``prepare_bundles_to`` wrote to ``spill`` (the file is removed).

    The file is mapped, not read: the arrays are views of the worker's own writes in the page cache, copied nowhere.
    """
    view = memoryview(b"")
    with open(spill, "rb") as f:
        if os.fstat(f.fileno()).st_size:
            view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    spill.unlink()
    out = []
    p = 0
    for array_size, tile_size, root, error, same in sizes:
        array = None
        if array_size >= 0:
            array = view[p : p + array_size]
            p += array_size
        out.append(Prepared(array, bytes(view[p : p + tile_size]), root, error, same))
        p += tile_size
    return out


def _perfect_root(tile: bytes) -> bytes:
    return merkle.root([tile[i : i + merkle.HASH_SIZE] for i in range(0, len(tile), merkle.HASH_SIZE)])


def build_tiles(level0: Iterable[tuple[bytes, bytes | None]]) -> dict[tuple[int, int], bytes]:
    """Every hash tile of the tree whose level-0 tiles (leaf hashes, root if full) are given in order.

    All level-0 tiles but the last must be full; the result holds the same tiles, full and partial, as a log of
    that size serves (keyed by level and tile index).
    """
    out: dict[tuple[int, int], bytes] = {}
    roots: list[bytes] = []
    for index, (data, full_root) in enumerate(level0):
        out[(0, index)] = data
        if len(data) == TILE_BYTES:
            roots.append(full_root if full_root is not None else _perfect_root(data))
    level = 1
    while roots:
        below, roots = roots, []
        for index, start in enumerate(range(0, len(below), tiles.TILE_WIDTH)):
            chunk = below[start : start + tiles.TILE_WIDTH]
            out[(level, index)] = b"".join(chunk)
            if len(chunk) == tiles.TILE_WIDTH:
                roots.append(merkle.root(chunk))
        level += 1
    return out


def first_difference(ours: bytes, theirs: bytes) -> int | None:
    """Position of the first 32-byte hash that differs between two tiles (or where one ends); None if equal."""
    if ours == theirs:
        return None
    for i in range(0, max(len(ours), len(theirs)), merkle.HASH_SIZE):
        if ours[i : i + merkle.HASH_SIZE] != theirs[i : i + merkle.HASH_SIZE]:
            return i // merkle.HASH_SIZE
    return None
