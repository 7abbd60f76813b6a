"""Keeping a verified copy of a neighbour's log, fed by the durable consumer the neighbour made for us.

Batches are staged in order of index. When a batch carries a checkpoint, that checkpoint must be signed by the
neighbour's log key for its origin, and the staged entries, appended to the copy so far, must hash into its root:
only then are they stored (in one compare-and-swap on the copy's size) and acknowledged. A batch ahead of the
copy waits for the ones before it (reordering); one already held is acknowledged and dropped (duplicates). What
does not verify is refused, counted by reason and logged, and never applied; the copy then waits where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg
import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from services.federation import access, links, metrics, names, settler, store, wire
from services.federation.peers import Peer
from services.federation.settle import from_neighbour
from services.federation.witness_protocol import checkpoint_text
from shared import merkle
from shared.logverify import LogVerifyError, TreeState, verify_checkpoint, verify_leaves
from shared.note import parse_checkpoint
from shared.outbox import Wakeup

log = logging.getLogger(__name__)

# Batches asked for per fetch, and how long a fetch waits for them.
FETCH = 256
FETCH_WAIT_SECONDS = 1.0
# What we held when we stopped reading is offered again after this long (our last fetch has expired by then).
HAND_BACK_SECONDS = FETCH_WAIT_SECONDS + 1.0
# While a neighbour's fork evidence is open, its batches are offered again after this long.
STOPPED_RETRY_SECONDS = 30.0
# What we held when a store did not happen (another process stored first) is offered again after this long.
START_OVER_SECONDS = 0.5
# Batches held ahead of a missing one before the hole is reported as a gap.
MAX_AHEAD = 4096
# Batches let go at a gap are offered again after this long (the hole may have filled by then).
GAP_RETRY_SECONDS = 5.0


@dataclass(slots=True)
class _Held:
    batch: wire.LogBatch
    msg: Msg


class Replicator:
    """Our verified copy of one neighbour's log."""

    def __init__(self, pool: asyncpg.Pool, peer: Peer, *, our_origin: str, our_name: str, settling: Wakeup) -> None:
        """``settling`` is the settler's wake-up call, set when stored entries queued settlements."""
        self._pool = pool
        self._peer = peer
        self._our_origin = our_origin
        self._our_name = our_name
        self._settling = settling
        # The copy as stored; ``_verified`` runs ahead of it by what is verified and yet to store, and ``_base`` is
        # where the store in flight (``_storing``, one at a time) leaves the copy: the next store starts there.
        self.tree = TreeState()
        self._verified = TreeState()
        self._base = TreeState()
        self._storing: asyncio.Task[str | None] | None = None
        self._pending: list[tuple[int, bytes]] = []  # verified checkpoints (size, note), in order
        self._pending_entries: list[bytes] = []
        self._pending_leaves: list[bytes] = []
        self._pending_msgs: list[Msg] = []
        self._staged: list[bytes] = []
        self._staged_msgs: list[Msg] = []
        self._ahead: list[_Held] = []
        self._size_gauge = metrics.REPLICATED_SIZE.labels(peer=peer.origin)
        # For the status: the furthest the neighbour's batches reached (as they claim, before verifying), when the
        # copy last held everything seen, and when the neighbour's server last answered us.
        self.seen_size = 0
        self.caught_up_at = time.time()
        self.last_contact_at: float | None = None

    @property
    def lag_entries(self) -> int:
        """Entries the neighbour has sent that the copy does not hold verified yet."""
        return max(0, self.seen_size - self.tree.size)

    @property
    def lag_seconds(self) -> float:
        """How long the copy has been behind what the neighbour sent (0 while it holds all of it)."""
        return 0.0 if self.lag_entries == 0 else max(0.0, time.time() - self.caught_up_at)

    async def run(self) -> None:
        """Replicate forever, reconnecting to the neighbour whenever it is unreachable."""
        async with self._pool.acquire() as conn:
            self.tree = (await store.replica(conn, self._peer.origin)).tree
        self._verified = self._base = self.tree
        self._size_gauge.set(self.tree.size)
        failures = 0
        while True:
            try:
                nc = await links.connect(self._peer, self._our_name, "replicating")
            except Exception as exc:
                failures += 1
                wait = links.retry_wait(failures)
                log.warning("cannot reach %s's NATS (%s); retrying in %.1f s", self._peer.origin, exc, wait)
                await asyncio.sleep(wait)
                continue
            failures = 0
            try:
                await self._follow(nc)
            finally:
                await self._hand_back(nc)
                await links.close(nc)

    async def _hand_back(self, nc: NatsClient) -> None:
        """Give back what we hold unacknowledged (staged, or ahead of a hole) as we stop reading, so that whoever
        reads next (we, restarted) gets it in seconds rather than after the stream's ack wait. A store in flight
        is finished first (its batches are acknowledged, or given back, by it)."""
        with contextlib.suppress(Exception):
            await self._stored()
        held = self._let_go()
        # The link may be gone: then the ack wait brings them back.
        with contextlib.suppress(Exception):
            for msg in held:
                # Offered again only once our last pull request has expired, or the server would hand them to it.
                await msg.nak(delay=HAND_BACK_SECONDS)
            await nc.flush(timeout=1)

    async def _follow(self, nc: NatsClient) -> None:
        js = nc.jetstream()
        subscription = await js.pull_subscribe_bind(
            durable=names.peer_consumer(self._our_name),
            stream=names.log_stream(self._peer.name),
            inbox_prefix=f"{access.inbox_prefix(self._our_name)}.".encode(),
        )
        failures = 0
        while True:
            try:
                msgs = await self._next(subscription)
            except NatsTimeout:
                self.last_contact_at = time.time()
                continue
            except Exception as exc:
                failures += 1
                wait = links.retry_wait(failures)
                log.warning("reading %s's log stream failed (%s); retrying in %.1f s", self._peer.origin, exc, wait)
                await asyncio.sleep(wait)
                continue
            failures = 0
            self.last_contact_at = time.time()
            await self.receive(msgs)

    async def _next(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next batches: all that are waiting (up to FETCH), or the first ones to come within the wait."""
        return await subscription.fetch(FETCH, timeout=FETCH_WAIT_SECONDS)

    async def receive(self, msgs: list[Msg]) -> None:
        """Take fetched messages in: hold, stage, verify and store what they allow."""
        if self._storing is not None and self._storing.done():
            # A store that did not happen un-verifies what it held: know it before telling duplicates apart.
            await self._stored()
        for msg in msgs:
            try:
                batch = wire.decoder.decode(msg.data)
            except msgspec.DecodeError as exc:
                await self._refuse("malformed", f"a message on the log stream cannot be read: {exc}", [msg])
                continue
            if batch.origin != self._peer.origin:
                await self._refuse("origin", f"a batch claims the origin {batch.origin!r}", [msg])
                continue
            self.seen_size = max(self.seen_size, batch.end)
            if batch.end <= self._verified.size:
                if batch.checkpoint is not None and batch.end <= self.tree.size:
                    await self._compare(batch.checkpoint)
                await msg.ack()  # a duplicate of what the copy holds (or is about to store)
                continue
            self._ahead.append(_Held(batch, msg))
        await self._advance()
        await self._store()

    async def _advance(self) -> None:
        while True:
            cursor = self._verified.size + len(self._staged)
            ready = [held for held in self._ahead if held.batch.start <= cursor]
            if not ready:
                break
            self._ahead = [held for held in self._ahead if held.batch.start > cursor]
            for held in sorted(ready, key=lambda h: h.batch.start):
                batch = held.batch
                cursor = self._verified.size + len(self._staged)
                if batch.start > cursor:  # staging was just refused and emptied: this one waits again
                    self._ahead.append(held)
                    continue
                self._staged_msgs.append(held.msg)
                if batch.end <= cursor:
                    continue  # a duplicate of staged entries: acknowledged with them
                self._staged.extend(batch.entries[cursor - batch.start :])
                if batch.checkpoint is not None:
                    await self._verify(batch.checkpoint)
        if len(self._ahead) > MAX_AHEAD:
            waiting = self._ahead
            self._ahead = []
            # Counted, but offered again rather than terminated: a hole can fill late (after our crash, what we had
            # fetched comes again only after the stream's ack wait), and a terminated batch would never come again,
            # leaving the copy stuck at the hole for good.
            await self._refuse(
                "gap",
                f"{len(waiting)} batches wait for entry {self._verified.size + len(self._staged):,}, which never came",
                [h.msg for h in waiting],
                again_after=GAP_RETRY_SECONDS,
            )

    async def _compare(self, note: bytes) -> None:
        """A signed checkpoint for a size the copy has passed must have the root the copy was verified against;
        if not, the neighbour signed two checkpoints that cannot both be true: keep both as evidence. (The held
        note was verified when stored, perhaps under a log key the neighbour has since replaced.)"""
        try:
            checkpoint = verify_checkpoint(note, self._peer.log_key)
        except LogVerifyError:
            return  # not the neighbour's signature: nothing it said
        async with self._pool.acquire() as conn:
            held = await store.replica_checkpoint_at(conn, self._peer.origin, checkpoint.size)
            if held is None or parse_checkpoint(checkpoint_text(held)).root_hash == checkpoint.root_hash:
                return
            await store.add_evidence(
                conn, self._peer.origin, "fork", held, note, f"two roots for size {checkpoint.size} on the log stream"
            )
        metrics.ALERTS.labels(peer=self._peer.origin, kind="fork").inc()
        log.error("FORK: %s signed two checkpoints of size %d", self._peer.origin, checkpoint.size)

    async def _verify(self, note: bytes) -> None:
        """Verify the staged entries against the checkpoint that ends them; what verifies waits to be stored with
        the rest of this fetch, what does not is refused."""
        msgs, entries = self._staged_msgs, self._staged
        self._staged_msgs, self._staged = [], []
        leaf = merkle.leaf_hash
        leaves = [leaf(data) for data in entries]  # hashed once: to verify, then to grow the copy's tiles
        try:
            checkpoint = verify_checkpoint(note, self._peer.log_key)
            grown = verify_leaves(self._verified, self._verified.size, leaves, checkpoint)
        except LogVerifyError as exc:
            await self._refuse(exc.reason, str(exc), msgs)
            return
        self._verified = grown
        self._pending.append((grown.size, note))
        self._pending_entries.extend(entries)
        self._pending_leaves.extend(leaves)
        self._pending_msgs.extend(msgs)

    async def _store(self) -> None:
        """Send what this fetch verified to be stored. The store runs while the next fetch is read and verified; it
        is awaited before the next one starts (one at a time, in order), and if it did not happen, what was verified
        after it is let go and comes again."""
        if not await self._stored():
            return
        if not self._pending:
            return
        pending, entries, leaves, msgs = self._pending, self._pending_entries, self._pending_leaves, self._pending_msgs
        self._pending, self._pending_entries, self._pending_leaves, self._pending_msgs = [], [], [], []
        base, self._base = self._base, self._verified
        self._storing = asyncio.create_task(
            self._write(base, self._verified, pending, entries, leaves, msgs), name=f"storing {self._peer.origin}"
        )

    async def _stored(self) -> bool:
        """Wait for the store in flight; False if it did not store (everything verified after it is then let go:
        the stream offers it again)."""
        task, self._storing = self._storing, None
        if task is None:
            return True
        try:
            unstored = await task
        except BaseException:
            self._start_over(self.tree)
            raise
        if unstored is None:
            return True
        async with self._pool.acquire() as conn:
            tree = (await store.replica(conn, self._peer.origin)).tree
        delay = STOPPED_RETRY_SECONDS if unstored == "stopped" else START_OVER_SECONDS
        for msg in self._start_over(tree):
            await msg.nak(delay=delay)
        return False

    def _let_go(self) -> list[Msg]:
        """Forget everything held beyond the stored copy; the messages it came in, to give back."""
        held = [*self._pending_msgs, *self._staged_msgs, *(h.msg for h in self._ahead)]
        self._staged, self._staged_msgs, self._ahead = [], [], []
        self._pending, self._pending_entries, self._pending_leaves, self._pending_msgs = [], [], [], []
        self._verified = self._base = self.tree
        return held

    def _start_over(self, tree: TreeState) -> list[Msg]:
        self.tree = tree
        self._size_gauge.set(tree.size)
        return self._let_go()

    async def _write(
        self,
        old: TreeState,
        new: TreeState,
        pending: list[tuple[int, bytes]],
        entries: list[bytes],
        leaves: list[bytes],
        msgs: list[Msg],
    ) -> str | None:
        """Store verified entries growing the copy from ``old`` to ``new`` in one transaction, with what they ask of
        our ledger, then acknowledge them; if they could not be stored, why ("stopped" by fork evidence, or "moved"
        by another writer), their messages given back."""
        try:
            async with self._pool.acquire() as conn:
                if await store.has_open_evidence(conn, self._peer.origin):
                    # Until a coordinator acts on the evidence, nothing more from this neighbour is applied or
                    # settled; the batches come again later, so the copy can carry on from here once it is settled.
                    metrics.REJECTED.labels(peer=self._peer.origin, reason="stopped").inc()
                    for msg in msgs:
                        await msg.nak(delay=STOPPED_RETRY_SECONDS)
                    return "stopped"
                # What the entries ask of our ledger is queued with them, atomically: a crash loses neither.
                found, answers = from_neighbour(self._our_origin, self._peer.origin, old.size, entries)
                async with conn.transaction():
                    moved = await store.append_verified(conn, self._peer.origin, old, new, pending, entries, leaves)
                    if moved and found:
                        queued = settler.enqueue(found)
                        await conn.execute(queued.sql, *queued.args)
                    if moved and answers:
                        await store.record_crossnet(conn, answers)
        except BaseException:
            with contextlib.suppress(Exception):
                for msg in msgs:
                    await msg.nak(delay=START_OVER_SECONDS)
            raise
        if not moved:  # another process stored first, or a coordinator reset the copy: start again from the store
            for msg in msgs:
                await msg.nak(delay=START_OVER_SECONDS)
            return "moved"
        if found:
            self._settling.set()
        self.tree = new
        self._size_gauge.set(new.size)
        if new.size >= self.seen_size:
            self.caught_up_at = time.time()
        for msg in msgs:
            await msg.ack()
        return None

    async def _refuse(self, reason: str, detail: str, msgs: list[Msg], *, again_after: float | None = None) -> None:
        """Count and log a refusal; the messages are not applied, and never delivered again (or, with
        ``again_after``, not before that many seconds)."""
        metrics.REJECTED.labels(peer=self._peer.origin, reason=reason).inc()
        log.warning("refused %d message(s) from %s: %s: %s", len(msgs), self._peer.origin, reason, detail)
        async with self._pool.acquire() as conn:
            await store.count_rejection(conn, self._peer.origin, reason, detail)
        for msg in msgs:
            if again_after is None:
                await msg.term()
            else:
                await msg.nak(delay=again_after)
