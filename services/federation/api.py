"""The federation's HTTP API: its status per peer, and the verified copies of neighbours' logs, served like our
own log so that an auditor can fetch both networks' logs from either one."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from services.federation import store
from services.federation.peers import Peer
from shared.errors import NotFound

MAX_RANGE = 1000
MAX_INDEX = 2**62


class RejectionView(msgspec.Struct, kw_only=True):
    reason: str
    count: int
    last_detail: str
    last_at: datetime


class PeerStatus(msgspec.Struct, kw_only=True):
    origin: str
    name: str
    # Entries of the neighbour's log held in our verified copy, and when the copy last grew.
    replicated_size: int
    replicated_at: datetime | None
    trust_limit: int
    # The neighbour's clearing account in our ledger (None until linked).
    clearing_account: str | None
    rejected: list[RejectionView]


class Status(msgspec.Struct, kw_only=True):
    origin: str
    name: str
    # Entries of our own log published to our log stream (by this process).
    published_size: int
    peers: list[PeerStatus]


class EntryView(msgspec.Struct, kw_only=True):
    index: int
    data: str  # base64 of the exact bytes the neighbour stored and hashed


class Entries(msgspec.Struct, kw_only=True):
    start: int
    entries: list[EntryView]


class FederationController(Controller):
    path = "/"
    tags = ("federation",)

    @get("/status", operation_id="federationStatus")
    async def status(self, state: State) -> Status:
        """Per peer: how far its log is replicated and verified, its trust limit, and what was refused."""
        peers: dict[str, Peer] = state.peers
        async with state.pool.acquire() as conn:
            copies = {replica.origin: replica for replica in await store.replicas(conn)}
            refused = await store.rejections(conn)
        return Status(
            origin=state.origin,
            name=state.name,
            published_size=state.publisher.published,
            peers=[
                PeerStatus(
                    origin=peer.origin,
                    name=peer.name,
                    replicated_size=copies[peer.origin].tree.size if peer.origin in copies else 0,
                    replicated_at=copies[peer.origin].updated_at if peer.origin in copies else None,
                    trust_limit=peer.trust_limit,
                    clearing_account=state.clearing.get(peer.origin),
                    rejected=[
                        RejectionView(reason=r.reason, count=r.count, last_detail=r.last_detail, last_at=r.last_at)
                        for r in refused
                        if r.origin == peer.origin
                    ],
                )
                for peer in peers.values()
            ],
        )

    @get("/peers/{peer_path:path}", operation_id="getPeerLog")
    async def peer_log(
        self,
        state: State,
        peer_path: FromPath[str],
        start: Annotated[int, QueryParameter(ge=0, le=MAX_INDEX)] = 0,
        end: Annotated[int | None, QueryParameter(ge=0, le=MAX_INDEX)] = None,
    ) -> Response[bytes]:
        """A neighbour's log as we hold it verified: ``<origin>/log/checkpoint`` (its signed note) or
        ``<origin>/log/entries?start=&end=`` (at most 1000 entries, as it stored them)."""
        origin, _, what = peer_path.strip("/").rpartition("/log/")
        peers: dict[str, Peer] = state.peers
        if origin not in peers or what not in ("checkpoint", "entries"):
            raise NotFound(f"no copy of {origin or peer_path!r}'s log is kept here")
        async with state.pool.acquire() as conn:
            replica = await store.replica(conn, origin)
            if what == "checkpoint":
                if replica.checkpoint is None:
                    raise NotFound(f"no checkpoint of {origin}'s log has been verified yet")
                return Response(replica.checkpoint, media_type="text/plain; charset=utf-8")
            stop = start + MAX_RANGE if end is None else min(end, start + MAX_RANGE)
            rows = await store.replica_entries(conn, origin, start, min(stop, replica.tree.size))
        view = Entries(
            start=start,
            entries=[EntryView(index=start + i, data=base64.b64encode(d).decode()) for i, d in enumerate(rows)],
        )
        return Response(msgspec.json.encode(view), media_type="application/json")
