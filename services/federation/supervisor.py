"""The federation at run time: the neighbours it serves and the tasks each one needs, started and stopped as
peers are added and removed (from the settings at start, then by coordinators through the API).

Per peer: its clearing account linked in our ledger, a replicator of its log, a cosignature collector (when it
names a witness key), a reader of its shared offers, its consumers of our log and of our offers, its user on our
NATS server, and its log among those our witness cosigns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.federation import access, cosigning, names, store
from services.federation.copies import BalanceCache
from services.federation.offer_reader import OfferReader, forget, offer_to, withdraw_from
from services.federation.peering import link
from services.federation.peers import Peer, peer_from_settings
from services.federation.publisher import Publisher
from services.federation.replicator import Replicator
from services.ledger.client import LedgerClient
from shared.errors import Conflict, Invalid
from shared.note import NoteError, Verifier
from shared.outbox import Wakeup
from shared.settings import PeerSettings, Settings

log = logging.getLogger(__name__)


class Federation:
    """Our neighbours and their tasks."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        pool: asyncpg.Pool,
        ledger: LedgerClient,
        js: JetStreamContext,
        publisher: Publisher,
        witness_logs: dict[str, Verifier],
        settling: Wakeup,
        offers: bool = False,
    ) -> None:
        self.name = name
        # Whether we publish shared offers (our offers bucket exists): then each peer gets a consumer of it.
        self._offers = offers
        self._settings = settings
        self._pool = pool
        self._ledger = ledger
        self._js = js
        self._publisher = publisher
        self._witness_logs = witness_logs
        # The logs our witness cosigns besides the neighbours' (a neighbour's own key wins for its origin).
        self.witnessed_logs: dict[str, Verifier] = {}
        self._settling = settling
        self.peers: dict[str, Peer] = {}
        self.clearing: dict[str, str] = {}
        self.replicators: dict[str, Replicator] = {}
        # The balances replayed from each copy, for its ``/log/balances``.
        self.copy_balances = BalanceCache()
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._closers: dict[str, list[Callable[[], Awaitable[None]]]] = {}

    async def start(self) -> None:
        """Bring the settings' peers into the database, then start every active peer."""
        async with self._pool.acquire() as conn:
            for configured in self._settings.federation.peers:
                peer = peer_from_settings(configured)
                await store.upsert_peer(conn, configured, peer.name)
            for named in self._settings.federation.witnessed_logs:
                await store.upsert_witnessed_log(
                    conn, named.origin, witnessed_log_key(named.origin, named.key).to_text()
                )
            stored = await store.active_peers(conn)
            for origin, key in (await store.witnessed_logs(conn)).items():
                self.witnessed_logs[origin] = Verifier.from_text(key)
                self._witness_logs.setdefault(origin, self.witnessed_logs[origin])
        for row in stored:
            await self._start(peer_from_settings(row.settings))
        await self._authorize()

    async def add(self, configured: PeerSettings) -> Peer:
        """Add a neighbour (or change one): stored, started, and let in to our NATS server."""
        peer = peer_from_settings(configured)
        if peer.name == self.name:
            raise Conflict(f"{peer.name!r} is our own NATS name: give the peer another name")
        clash = [p.origin for p in self.peers.values() if p.name == peer.name and p.origin != peer.origin]
        if clash:
            raise Conflict(f"the NATS name {peer.name!r} is already {clash[0]}'s: give the peer another name")
        async with self._pool.acquire() as conn:
            await store.upsert_peer(conn, configured, peer.name)
        await self._stop(peer.origin)
        await self._start(peer)
        await self._authorize()
        return peer

    async def remove(self, origin: str) -> bool:
        """Stop peering with ``origin``: its tasks stop, its consumer and NATS user go; False if it was no peer."""
        async with self._pool.acquire() as conn:
            removed = await store.remove_peer(conn, origin)
        peer = self.peers.get(origin)
        await self._stop(origin)
        if peer is not None:
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(names.log_stream(self.name), names.peer_consumer(peer.name))
            if self._offers:
                await withdraw_from(self._js, self.name, peer.name)
        await forget(self._pool, origin)
        await self._authorize()
        return removed or peer is not None

    async def witness_log(self, origin: str, key: str) -> Verifier:
        """Have our witness cosign ``origin``'s log (its checkpoints signed by ``key``), a neighbour's or not."""
        verifier = witnessed_log_key(origin, key)
        async with self._pool.acquire() as conn:
            await store.upsert_witnessed_log(conn, origin, verifier.to_text())
        self.witnessed_logs[origin] = verifier
        if origin not in self.peers:
            self._witness_logs[origin] = verifier
        return verifier

    async def unwitness_log(self, origin: str) -> bool:
        """Stop cosigning ``origin``'s log (unless it is a neighbour's); False if no coordinator had named it."""
        async with self._pool.acquire() as conn:
            removed = await store.remove_witnessed_log(conn, origin)
        self.witnessed_logs.pop(origin, None)
        if origin not in self.peers:
            self._witness_logs.pop(origin, None)
        return removed

    async def resolve(self, origin: str, action: str, reason: str) -> list[int]:
        """A coordinator's resolution of the open fork evidence against ``origin``'s log; the ids resolved (none
        if there was none open). ``dismiss``: our copy stands, and replicating, settling and cosigning resume.
        ``reset``: our copy and our witness's record of that log are dropped, and the peer's tasks start again, so
        the log is replicated from its start under the peer's current key."""
        async with self._pool.acquire() as conn:
            if not await store.has_open_evidence(conn, origin):
                return []
            if action == "dismiss":
                resolved = await store.resolve_evidence(conn, origin, action, reason)
                log.warning("evidence against %s dismissed by a coordinator: %s", origin, reason)
                return resolved
        peer = self.peers.get(origin)
        await self._stop(origin)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                resolved = await store.resolve_evidence(conn, origin, action, reason)
                await store.reset_copy(conn, origin)
            self.copy_balances.forget(origin)
            log.warning("our copy of %s's log was reset by a coordinator: %s", origin, reason)
        finally:
            if peer is not None:
                await self._start(peer)
        return resolved

    async def close(self) -> None:
        for origin in list(self.peers):
            await self._stop(origin)

    async def _start(self, peer: Peer) -> None:
        self.peers[peer.origin] = peer
        self._witness_logs[peer.origin] = peer.log_key
        await self._publisher.offer_to([peer.name])
        replicator = Replicator(
            self._pool, peer, our_origin=self._settings.origin, our_name=self.name, settling=self._settling
        )
        self.replicators[peer.origin] = replicator
        tasks = [self._task(self._linked(peer), f"linking {peer.origin}")]
        tasks.append(self._task(replicator.run(), f"replicating {peer.origin}"))
        if self._offers:
            await offer_to(self._js, self.name, peer.name)
        reader = OfferReader(self._pool, peer, our_name=self.name)
        tasks.append(self._task(reader.run(), f"reading {peer.origin}'s offers"))
        closers = []
        if peer.witness_key is not None:
            send, close = cosigning.over_nats(peer, self.name)
            target = cosigning.WitnessTarget(peer.witness_key, send)
            collector = cosigning.Collector(self._pool, self._ledger, target, published=self._publisher.subscribe())
            tasks.append(self._task(collector.run(), f"cosigning by {peer.origin}"))
            closers.append(close)
        self._tasks[peer.origin] = tasks
        self._closers[peer.origin] = closers

    async def _stop(self, origin: str) -> None:
        tasks = self._tasks.pop(origin, [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for close in self._closers.pop(origin, []):
            await close()
        self.peers.pop(origin, None)
        self.replicators.pop(origin, None)
        self._witness_logs.pop(origin, None)
        if origin in self.witnessed_logs:  # named for our witness as well: it still cosigns that log
            self._witness_logs[origin] = self.witnessed_logs[origin]

    async def _linked(self, peer: Peer) -> None:
        self.clearing[peer.origin] = await link(self._ledger, peer)

    def _task(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(work, name=name)

    async def _authorize(self) -> None:
        """Rewrite our NATS server's users (ours, and one per peer we issued a password) and have it reload."""
        nats = self._settings.nats
        if nats.authorization_file is None or nats.user is None or nats.password is None:
            return
        issued = {p.name: p.issued_password for p in self.peers.values() if p.issued_password}
        block = access.authorization(self.name, nats.user, nats.password, issued)
        access.write_authorization(Path(nats.authorization_file), block)
        if nats.pid_file is not None and not access.reload_server(Path(nats.pid_file)):
            log.warning("could not have our NATS server reload its users (pid file %s)", nats.pid_file)


def witnessed_log_key(origin: str, key: str) -> Verifier:
    """The verifier of a log named for our witness; Invalid unless it is a note key named after ``origin``."""
    try:
        verifier = Verifier.from_text(key)
    except NoteError as exc:
        raise Invalid(f"not a log verifier key: {exc}") from None
    if verifier.name != origin:
        raise Invalid(f"the key is named {verifier.name!r}, not after the log's origin {origin!r}")
    return verifier
