"""The ledger as a transparency log: signed checkpoints, and proofs and tiles served from the ledger's stored tiles by
shared/tiledlog (the same code that serves the federation's copies of neighbours' logs)."""

from __future__ import annotations

from services.ledger import store
from shared import note, tiledlog
from shared.db import Connection

ENTRY_BUNDLE_MAX = 0xFFFF  # tlog-tiles entry bundles prefix each entry with a big-endian uint16 length


class CheckpointSigner:
    """Signs ``origin / size / root`` checkpoints (C2SP tlog-checkpoint) with the network key."""

    def __init__(self, signer: note.Signer) -> None:
        self.signer = signer
        self.origin = signer.name

    def sign(self, size: int, root: bytes) -> bytes:
        body = note.format_checkpoint(note.Checkpoint(self.origin, size, root))
        return note.sign_note(body, self.signer)


class LedgerTiles:
    """Our ledger's tiles and entries, read on one connection (a ``shared.tiledlog.StoredLog``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def tiles(self, keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return await store.tiles(self._conn, keys)

    async def tile(self, level: int, index: int) -> bytes | None:
        return await store.tile(self._conn, level, index)

    async def entries(self, start: int, end: int) -> list[bytes]:
        return await store.entries_range(self._conn, start, end)

    async def entry_bundle(self, start: int, width: int) -> bytes | None:
        # The database frames the bundle: an audit asks for thousands of bundles per million entries, and a row per
        # entry, each framed here, cost more CPU than the rest of the request.
        bundle = await store.entry_bundle(self._conn, start, start + width)
        if bundle.found < width:
            return None
        if bundle.longest > ENTRY_BUNDLE_MAX:
            raise ValueError(f"an entry of {bundle.longest} bytes does not fit an entry bundle")
        return bundle.data


async def root_at(conn: Connection, size: int) -> bytes:
    """The tree root after the first ``size`` entries."""
    return await tiledlog.root_at(LedgerTiles(conn), size)


async def inclusion_proof(conn: Connection, index: int, size: int) -> tuple[list[bytes], bytes, bytes]:
    """Return (proof, leaf hash, root at size) for entry ``index`` in the tree of ``size`` entries."""
    head = await store.head(conn)
    return await tiledlog.inclusion_proof(LedgerTiles(conn), head.size, index, size)


async def consistency_proof(conn: Connection, old: int, new: int) -> tuple[list[bytes], bytes, bytes]:
    """Return (proof, old root, new root) showing the tree of ``old`` entries is a prefix of ``new``."""
    head = await store.head(conn)
    return await tiledlog.consistency_proof(LedgerTiles(conn), head.size, old, new)


async def proof_bundle(conn: Connection, index: int) -> str:
    """A C2SP tlog-proof for one entry under the latest checkpoint; the entry's bytes ride in ``extra``."""
    return await tiledlog.proof_bundle(LedgerTiles(conn), index, await store.latest_checkpoint(conn))


async def tile_bytes(conn: Connection, path: str) -> bytes:
    """Serve a C2SP tlog-tiles path: a hash tile or an entry bundle, full or partial."""
    return await tiledlog.tile_bytes(LedgerTiles(conn), path)
