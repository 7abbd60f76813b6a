"""One command's unit of work: the streams it read, and everything it writes, sent as one statement.

A command reads (streams, read models), decides, and then writes: its new events, the read-model rows projected
from each stream's whole history, new data keys and outbox rows. ``Unit`` collects those writes and ``flush``
sends them as a single statement, each write a data-modifying CTE. One statement is atomic on its own, so a
command needs no BEGIN and COMMIT round trips: its reads see committed state (as they would in a READ COMMITTED
transaction) and the one statement either does everything or nothing.

PostgreSQL runs a statement's data-modifying CTEs in an order it does not promise, so a writer that lost the race
for a stream's next version may fail on any constraint the winner's rows touch (the stream's version, a data key,
a member's email, an outbox key, a read-model row). Nothing here trusts the constraint's name: when the statement
fails, the versions of the streams the unit read (and the data keys it made) are read again, and if any moved the
failure is a ``StreamConflict``, to be retried from a fresh read. Either way the statement wrote nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from services.exchange import events as ev
from services.exchange import outbox, projections
from services.exchange.eventstore import Loaded, StreamConflict, append_write, load_with_keys, moved
from services.exchange.store import ExchangeView
from services.exchange.vault import Vault
from services.exchange.writes import Write, compose
from shared.db import Connection


async def execute(conn: Connection, writes: Sequence[Write]) -> None:
    """Send ``writes`` as one statement (all or nothing)."""
    if writes:
        statement = compose(writes)
        await conn.execute(statement.sql, *statement.args)


@dataclass(slots=True)
class Unit:
    """A command's connection and vault, the streams it loaded, and the writes it has not sent yet.

    ``save`` and ``enqueue`` collect; ``flush`` sends what was collected as one statement (``Commands._tx`` flushes
    when the command's work returns). A command that must read its own writes flushes first, inside a transaction.
    """

    conn: Connection
    vault: Vault
    enqueued: bool = False
    # Each stream's version as loaded (and as saved since).
    loaded: dict[str, int] = field(default_factory=dict)
    # The exchanges flushed, as their projection wrote them (what a command answers with).
    views: dict[str, ExchangeView] = field(default_factory=dict)
    # Streams saved since the last flush, with their whole history (events already stored and new ones).
    _saved: dict[str, list[ev.AnyEvent]] = field(default_factory=dict)
    _events: list[tuple[str, int, ev.AnyEvent]] = field(default_factory=list)
    _outbox: list[outbox.OutboxCommand] = field(default_factory=list)
    _preloaded: dict[str, Loaded] = field(default_factory=dict)
    # What the writes not yet committed assume: each stream's version before them, and the subjects that had no
    # data key. Inside a transaction this spans every flush since it began (a rollback undoes them all).
    _read_at: dict[str, int] = field(default_factory=dict)
    _keyless: set[str] = field(default_factory=set)

    async def preload(self, streams: list[str]) -> None:
        """Read several streams in one round trip, for the ``load`` calls to come."""
        self._preloaded.update(await load_with_keys(self.conn, streams))

    def loaded_with(self, stream: str, loaded: Loaded) -> None:
        """A stream read along with something else, for the ``load`` to come."""
        self._preloaded[stream] = loaded

    async def load(self, stream: str) -> list[ev.AnyEvent]:
        """The stream's events (with those this unit saved and has not sent yet); the data key of the subject named
        like it comes along for the vault."""
        if stream in self._saved:
            return self._saved[stream]
        loaded = self._preloaded.pop(stream, None)
        if loaded is None:
            loaded = (await load_with_keys(self.conn, [stream]))[stream]
        self.loaded[stream] = loaded.version
        self.vault.prime(stream, loaded.key)
        return loaded.history

    def new_stream(self, stream: str) -> None:
        """Tell the vault a freshly made id has no data key yet (sealing makes one without asking the database)."""
        self.vault.prime(stream, None)

    async def save(self, stream: str, history: list[ev.AnyEvent], new: list[ev.AnyEvent]) -> list[ev.AnyEvent]:
        """Append ``new`` after what ``load`` saw; the stream's read model is projected from it at ``flush``."""
        if not new:
            return history
        version = self.loaded.get(stream, 0)
        self._events.extend((stream, version + i, event) for i, event in enumerate(new, start=1))
        self.loaded[stream] = version + len(new)
        full = [*history, *new]
        self._saved[stream] = full
        return full

    async def enqueue(self, command: outbox.OutboxCommand) -> None:
        """Add ``command`` to the outbox with this unit's events (a key already there is ignored)."""
        self._outbox.append(command)
        self.enqueued = True

    @property
    def pending(self) -> bool:
        return bool(self._events or self._outbox or self.vault.pending)

    async def flush(self, also: Sequence[Write] = ()) -> None:
        """Send every collected write as one statement: keys, projections and outbox rows, with the events (and
        ``also``, writes of the caller's own)."""
        if not self.pending and not also:
            return
        await self.send(await self.writes(also))

    async def writes(self, also: Sequence[Write] = ()) -> list[Write]:
        """Every collected write (and ``also``), handed out once for ``send``: their order does not matter."""
        fresh = self.vault.fresh
        writes = [*also, *self.vault.writes()]
        for stream, history in self._saved.items():
            projected = await projections.projection(self.vault, stream, history)
            writes.extend(projected.writes)
            if projected.view is not None:
                self.views[stream] = projected.view
        if self._outbox:
            writes.append(outbox.enqueue_write(self._outbox))
        if self._events:
            writes.append(append_write(self._events))
        for stream, version, _ in self._events:
            self._read_at.setdefault(stream, version - 1)
        self._keyless.update(fresh)
        self._saved, self._events, self._outbox = {}, [], []
        return writes

    async def send(self, writes: Sequence[Write]) -> None:
        """Send ``writes`` as one statement; if it fails after another writer moved what this unit read, whatever
        constraint fired, that is a ``StreamConflict`` (outside a transaction: see ``lost_race`` inside one)."""
        try:
            await execute(self.conn, writes)
        except asyncpg.IntegrityConstraintViolationError as exc:
            # An aborted transaction answers no query: the caller asks ``lost_race`` once it has rolled back.
            if not self.conn.is_in_transaction() and await self.lost_race():
                raise StreamConflict(f"lost a race ({exc.__class__.__name__} on {exc.constraint_name})") from exc
            raise
        if not self.conn.is_in_transaction():
            self._read_at.clear()
            self._keyless.clear()

    async def lost_race(self) -> bool:
        """Whether another writer committed to a stream this unit wrote (or made a data key it made) since it read:
        then a failed write of this unit lost a race, whatever constraint it failed on."""
        if not self._read_at and not self._keyless:
            return False
        return await moved(self.conn, self._read_at, sorted(self._keyless))
