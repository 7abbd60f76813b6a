"""The ledger as a transparency log: signed checkpoints, proofs and tiles, on shared/merkle, tiles and note."""

from __future__ import annotations

import base64

from services.ledger import store
from shared import merkle, note, tiles
from shared.db import Connection
from shared.errors import Invalid, NotFound

ENTRY_BUNDLE_MAX = 0xFFFF  # tlog-tiles entry bundles prefix each entry with a big-endian uint16 length


class CheckpointSigner:
    """Signs ``origin / size / root`` checkpoints (C2SP tlog-checkpoint) with the network key."""

    def __init__(self, signer: note.Signer) -> None:
        self.signer = signer
        self.origin = signer.name

    def sign(self, size: int, root: bytes) -> bytes:
        body = note.format_checkpoint(note.Checkpoint(self.origin, size, root))
        return note.sign_note(body, self.signer)


def _check_size(size: int, head: int, what: str) -> None:
    if not 0 <= size <= head:
        raise Invalid(f"{what} {size} is outside the log (its size is {head})", log_size=head)


async def _hashes_for(conn: Connection, ranges: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    return await store.tiles(conn, tiles.tiles_for_ranges(ranges))


def _prefix_root(size: int, stored: dict[tuple[int, int], bytes]) -> bytes:
    if size == 0:
        return merkle.EMPTY_ROOT
    return merkle.fold(
        [tiles.subtree_hash(h, i, stored[tiles.subtree_tiles(h, i)]) for h, i in merkle.subtrees(0, size)]
    )


async def root_at(conn: Connection, size: int) -> bytes:
    """The tree root after the first ``size`` entries."""
    stored = await _hashes_for(conn, [(0, size)] if size else [])
    return _prefix_root(size, stored)


async def inclusion_proof(conn: Connection, index: int, size: int) -> tuple[list[bytes], bytes, bytes]:
    """Return (proof, leaf hash, root at size) for entry ``index`` in the tree of ``size`` entries."""
    head = await store.head(conn)
    _check_size(size, head.size, "tree size")
    if not 0 <= index < size:
        raise Invalid(f"index {index} is not below the tree size {size}")
    ranges = merkle.inclusion_ranges(index, size)
    stored = await _hashes_for(conn, [*ranges, (index, index + 1), (0, size)])
    proof = [tiles.range_hash_from_tiles(lo, hi, stored) for lo, hi in ranges]
    leaf = tiles.range_hash_from_tiles(index, index + 1, stored)
    return proof, leaf, _prefix_root(size, stored)


async def consistency_proof(conn: Connection, old: int, new: int) -> tuple[list[bytes], bytes, bytes]:
    """Return (proof, old root, new root) showing the tree of ``old`` entries is a prefix of ``new``."""
    head = await store.head(conn)
    _check_size(new, head.size, "tree size")
    if not 0 <= old <= new:
        raise Invalid(f"old size {old} must be between 0 and the new size {new}")
    ranges = merkle.consistency_ranges(old, new)
    stored = await _hashes_for(conn, [*ranges, (0, old), (0, new)])
    proof = [tiles.range_hash_from_tiles(lo, hi, stored) for lo, hi in ranges]
    return proof, _prefix_root(old, stored), _prefix_root(new, stored)


async def proof_bundle(conn: Connection, index: int) -> str:
    """A C2SP tlog-proof for one entry under the latest checkpoint; the entry's bytes ride in ``extra``."""
    latest = await store.latest_checkpoint(conn)
    if latest is None or index >= latest[0] or index < 0:
        raise NotFound(f"entry {index} is not covered by a checkpoint yet")
    size, checkpoint = latest
    proof, _, _ = await inclusion_proof(conn, index, size)
    data = (await store.entries_by_index(conn, [index]))[index]
    lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(data).decode(), f"index {index}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n\n" + checkpoint.decode()


async def tile_bytes(conn: Connection, path: str) -> bytes:
    """Serve a C2SP tlog-tiles path: a hash tile or an entry bundle, full or partial."""
    try:
        where = tiles.parse_tile_path(path)
    except ValueError as exc:
        raise NotFound(f"no such tile: {exc}") from None
    if where.level == "entries":
        start = where.index * tiles.TILE_WIDTH
        # Entries are appended in order, with the head, in one transaction: the range is in the log exactly when
        # every index of it is stored, so the head need not be read. The database frames the bundle: an audit asks
        # for thousands of bundles per million entries, and a row per entry, each framed here, cost more CPU than
        # the rest of the request.
        bundle = await store.entry_bundle(conn, start, start + where.width)
        if bundle.found < where.width:
            raise NotFound(f"entries {start}..{start + where.width - 1} are not all in the log yet")
        if bundle.longest > ENTRY_BUNDLE_MAX:
            raise ValueError(f"an entry of {bundle.longest} bytes does not fit an entry bundle")
        return bundle.data
    stored = await store.tile(conn, where.level, where.index)
    if stored is None or len(stored) < where.width * merkle.HASH_SIZE:
        raise NotFound(f"tile {path} does not exist (yet)")
    return stored[: where.width * merkle.HASH_SIZE]
