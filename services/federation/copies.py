"""Our verified copies of neighbours' logs, served like our own log (checkpoint, entries, tiles, proofs, balances),
so that an auditor can fetch both networks' logs from either one.

Everything is read from the copy alone: the neighbour's signed checkpoint our copy was verified against, the
entries as it stored them, and the hash tiles written with them (``store.append_verified``). Tiles and proofs come
from ``shared/tiledlog.py``, the code that serves our own ledger's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec

from services.federation import store

# The ledger's public answer types (bytes go out as base64): a copy answers in exactly the ledger's shapes.
from services.ledger.client_types import Balance, Balances, ConsistencyProof, Entries, Entry, InclusionProof
from services.ledger.entries import AccountOpened, Transfer, entry_decoder
from shared import tiledlog
from shared.db import Connection
from shared.errors import Invalid, NotFound

MAX_RANGE = 1000
JSON = "application/json"
TEXT = "text/plain"  # Litestar adds "; charset=utf-8" to a text/* media type itself
OCTETS = "application/octet-stream"


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """The query parameters a copy's paths take (each path reads its own, as our ledger's do)."""

    start: int = 0
    end: int | None = None
    index: int | None = None
    size: int | None = None
    old: int | None = None
    new: int | None = None


@dataclass
class _Replayed:
    """Balances replayed from a copy's first ``size`` entries."""

    size: int = 0
    # The copy's root at ``size``: a copy reset and grown again since is replayed again from its start.
    root: bytes = b""
    kinds: dict[str, str] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class BalanceCache:
    """Per copy, its balances replayed so far, so that each request replays only the entries added since."""

    def __init__(self) -> None:
        self._copies: dict[str, _Replayed] = {}

    def forget(self, origin: str) -> None:
        """Start ``origin``'s replay again from nothing (its copy was reset)."""
        self._copies.pop(origin, None)

    async def at(self, conn: Connection, origin: str, size: int) -> Balances:
        """Every account's balance after the copy's first ``size`` entries."""
        log = store.CopyTiles(conn, origin)
        replayed = self._copies.setdefault(origin, _Replayed())
        async with replayed.lock:
            if replayed.size > size or (replayed.size and await tiledlog.root_at(log, replayed.size) != replayed.root):
                replayed = self._copies[origin] = _Replayed(lock=replayed.lock)
            while replayed.size < size:
                end = min(size, replayed.size + MAX_RANGE)
                for data in await store.replica_entries(conn, origin, replayed.size, end):
                    entry = entry_decoder.decode(data)
                    if type(entry) is Transfer:
                        balances = replayed.balances
                        balances[entry.payer] = balances.get(entry.payer, 0) - entry.minutes
                        balances[entry.payee] = balances.get(entry.payee, 0) + entry.minutes
                    elif type(entry) is AccountOpened:
                        replayed.kinds[entry.account] = entry.kind
                        replayed.balances.setdefault(entry.account, 0)
                replayed.size = end
            replayed.root = await tiledlog.root_at(log, replayed.size)
            accounts = [
                Balance(id=account, kind=replayed.kinds.get(account, "?"), balance=balance)
                for account, balance in sorted(replayed.balances.items())
            ]
        return Balances(size=size, accounts=accounts)


def _json(value: msgspec.Struct) -> tuple[bytes, str]:
    return msgspec.json.encode(value), JSON


def _required(what: str, **values: int | None) -> list[int]:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise Invalid(f"{what} needs the query parameter(s) {', '.join(missing)}")
    return [value for value in values.values() if value is not None]


async def serve(conn: Connection, origin: str, what: str, query: Query, cache: BalanceCache) -> tuple[bytes, str]:
    """Answer ``<origin>/log/<what>`` from our verified copy of ``origin``'s log: (body, media type)."""
    replica = await store.held_replica(conn, origin)
    size = 0 if replica is None else replica.tree.size
    log = store.CopyTiles(conn, origin)
    if what == "checkpoint":
        if replica is None or replica.checkpoint is None:
            raise NotFound(f"no checkpoint of {origin}'s log has been verified yet")
        return replica.checkpoint, TEXT
    if what == "entries":
        start = query.start
        stop = start + MAX_RANGE if query.end is None else min(query.end, start + MAX_RANGE)
        rows = await store.replica_entries(conn, origin, start, min(stop, size))
        return _json(Entries(start=start, entries=[Entry(index=start + i, data=d) for i, d in enumerate(rows)]))
    if what.startswith("tile/"):
        return await tiledlog.tile_bytes(log, what), OCTETS
    if what == "proof/inclusion":
        index, at = _required("an inclusion proof", index=query.index, size=query.size)
        proof, leaf, root = await tiledlog.inclusion_proof(log, size, index, at)
        return _json(InclusionProof(index=index, size=at, leaf_hash=leaf, root=root, proof=proof))
    if what == "proof/consistency":
        old, new = _required("a consistency proof", old=query.old, new=query.new)
        proof, old_root, new_root = await tiledlog.consistency_proof(log, size, old, new)
        return _json(ConsistencyProof(old=old, new=new, old_root=old_root, new_root=new_root, proof=proof))
    if what == "proof/bundle":
        [index] = _required("a proof bundle", index=query.index)
        checkpoint = None if replica is None or replica.checkpoint is None else (size, replica.checkpoint)
        return (await tiledlog.proof_bundle(log, index, checkpoint)).encode(), TEXT
    if what == "balances":
        return _json(await cache.at(conn, origin, size))
    raise NotFound(f"a copy of a log serves no {what!r}")
