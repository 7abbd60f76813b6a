"""The ledger's public log over HTTP: checkpoints, entries, tiles, proofs and balances, which anyone may read and
verify, and the witnesses' cosignatures, which only the federation may add."""

from __future__ import annotations

import base64
from typing import Annotated

import msgspec
from litestar import Controller, MediaType, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from services.ledger import store, tlog
from services.ledger.access import require_federation
from services.ledger.api import MAX_INDEX
from services.ledger.appender import Appender
from shared import tiledlog
from shared.errors import Invalid, NotFound
from shared.note import NoteError, parse_signature_line
from shared.web import StrictRequest

MAX_RANGE = 1000
# The longest a reader may ask to wait for new checkpoints.
MAX_WAIT_SECONDS = 10.0


class EntryView(msgspec.Struct, kw_only=True):
    index: int
    data: str  # base64 of the exact stored bytes (the Merkle leaf is SHA-256(0x00 || bytes))


class Entries(msgspec.Struct, kw_only=True):
    start: int
    entries: list[EntryView]


SignatureLine = Annotated[str, msgspec.Meta(max_length=1000)]


class AddCosignatures(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
    # C2SP signature lines, "— <witness> <base64(key id || timestamp || signature)>".
    signatures: Annotated[list[SignatureLine], msgspec.Meta(min_length=1, max_length=64)]


class CheckpointView(msgspec.Struct, kw_only=True):
    size: int
    note: str  # the signed checkpoint note as the log signed it (no cosignatures)


class Checkpoints(msgspec.Struct, kw_only=True):
    checkpoints: list[CheckpointView]


class InclusionProof(msgspec.Struct, kw_only=True):
    index: int
    size: int
    leaf_hash: str
    root: str
    proof: list[str]


class ConsistencyProof(msgspec.Struct, kw_only=True):
    old: int
    new: int
    old_root: str
    new_root: str
    proof: list[str]


class Balance(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    balance: int


class Balances(msgspec.Struct, kw_only=True):
    size: int
    accounts: list[Balance]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


IndexParam = Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)]


class LogController(Controller):
    """The public log: anyone may read it, and verify it."""

    path = "/log"
    tags = ("log",)

    # Litestar adds "; charset=utf-8" to a text/* media type itself.
    @get(
        "/checkpoint",
        operation_id="getCheckpoint",
        media_type=MediaType.TEXT,
        response_headers={"Cache-Control": tiledlog.BRIEF_CACHE},
    )
    async def checkpoint(self, state: State) -> bytes:
        """The latest signed checkpoint, with every witness cosignature collected for it appended."""
        async with state.pool.acquire() as conn:
            latest = await store.latest_checkpoint(conn)
            if latest is None:
                raise NotFound("the log has no checkpoint yet")
            cosigned = await store.cosignatures_at(conn, latest[0])
        return latest[1] + "".join(cosigned).encode()

    @post(
        "/cosignatures",
        operation_id="addCosignatures",
        guards=[require_federation],
        status_code=HTTP_204_NO_CONTENT,
        request_class=StrictRequest,
    )
    async def add_cosignatures(self, data: JSONBody[AddCosignatures], state: State) -> None:
        """Keep witnesses' cosignatures of one of our checkpoints (the federation verified them against each
        witness's key), to serve with that checkpoint."""
        lines = []
        for line in data.signatures:
            try:
                signature = parse_signature_line(line)
            except NoteError as exc:
                raise Invalid(f"not a cosignature line: {exc}") from None
            lines.append((signature.name, signature.key_id, signature.to_line()))
        async with state.pool.acquire() as conn:
            if await store.checkpoint_at(conn, data.size) is None:
                raise NotFound(f"the log signed no checkpoint of size {data.size}")
            await store.add_cosignatures(conn, data.size, lines)

    @get("/checkpoints", operation_id="getCheckpoints")
    async def checkpoints(
        self,
        state: State,
        after: Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_RANGE)] = 100,
        wait: Annotated[float, QueryParameter(ge=0, le=MAX_WAIT_SECONDS)] = 0,
    ) -> Checkpoints:
        """The signed checkpoints of sizes above ``after``, oldest first: one per committed batch, so a reader can
        verify the log batch by batch (a neighbour's publisher sends each batch with its checkpoint). With ``wait``,
        an answer that would be empty waits up to that many seconds for the next batch to be written (a long poll)."""
        appender: Appender = state.appender
        written = appender.written
        async with state.pool.acquire() as conn:
            rows = await store.checkpoints_after(conn, after, limit)
        if not rows and wait > 0:
            await appender.wait_beyond(written, wait)
            async with state.pool.acquire() as conn:
                rows = await store.checkpoints_after(conn, after, limit)
        return Checkpoints(checkpoints=[CheckpointView(size=size, note=note.decode()) for size, note in rows])

    @get("/entries", operation_id="getEntries")
    async def entries(
        self,
        state: State,
        start: IndexParam = 0,
        end: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
    ) -> Entries:
        """Entries [start, end) as stored, at most 1000 per call."""
        end = start + MAX_RANGE if end is None else min(end, start + MAX_RANGE)
        async with state.pool.acquire() as conn:
            rows = await store.entries_range(conn, start, end)
        return Entries(start=start, entries=[EntryView(index=start + i, data=_b64(d)) for i, d in enumerate(rows)])

    @get("/tile/{path:path}", operation_id="getTile", media_type="application/octet-stream")
    async def tile(self, path: FromPath[str], state: State) -> Response[bytes]:
        async with state.pool.acquire() as conn:
            data = await tlog.tile_bytes(conn, "tile/" + path.lstrip("/"))
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Cache-Control": tiledlog.tile_cache_control("tile/" + path.lstrip("/"))},
        )

    @get("/proof/inclusion", operation_id="getInclusionProof")
    async def inclusion(self, state: State, index: IndexParam, size: IndexParam) -> InclusionProof:
        async with state.pool.acquire() as conn:
            proof, leaf, root = await tlog.inclusion_proof(conn, index, size)
        return InclusionProof(
            index=index, size=size, leaf_hash=_b64(leaf), root=_b64(root), proof=[_b64(h) for h in proof]
        )

    @get("/proof/consistency", operation_id="getConsistencyProof")
    async def consistency(self, state: State, old: IndexParam, new: IndexParam) -> ConsistencyProof:
        async with state.pool.acquire() as conn:
            proof, old_root, new_root = await tlog.consistency_proof(conn, old, new)
        return ConsistencyProof(
            old=old, new=new, old_root=_b64(old_root), new_root=_b64(new_root), proof=[_b64(h) for h in proof]
        )

    @get("/proof/bundle", operation_id="getProofBundle", media_type=MediaType.TEXT)
    async def bundle(self, state: State, index: IndexParam) -> str:
        """A C2SP tlog-proof for one entry (save it as ``.tlog-proof`` and verify it offline)."""
        async with state.pool.acquire() as conn:
            return await tlog.proof_bundle(conn, index)

    @get("/balances", operation_id="getBalances")
    async def balances(self, state: State) -> Balances:
        """Every account's balance after the first ``size`` entries of the log (the current size), read in one
        snapshot. Public, like the log itself (which reveals every balance): an auditor compares these with the
        balances replayed from the entries to exactly ``size``."""
        async with state.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            size = (await store.head(conn)).size
            rows = await store.all_balances(conn)
        return Balances(size=size, accounts=[Balance(id=i, kind=k, balance=b) for i, k, b in rows])
