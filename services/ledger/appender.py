"""The group-commit writer: every ledger change goes through here, in order, in batches.

Callers ``submit`` a command and wait. One writer task drains whatever has queued into one batch, decides each
command in order, appends the entries, updates the tiles, signs a checkpoint, commits, and only then answers every
caller. Durability is untouched: throughput comes from batching. Deciding and writing one batch (on cached or
fresh state) is ``committer.py``'s; this module queues, batches, retries and answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.ledger import metrics
from services.ledger.commands import Command
from services.ledger.committer import Ahead, Appended, Committer
from services.ledger.tlog import CheckpointSigner
from shared.db import Connection
from shared.errors import DomainError

__all__ = ["Appended", "Appender"]

log = logging.getLogger(__name__)

# Errors after which the whole batch is simply tried again on a fresh connection.
_TRANSIENT = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    ConnectionError,
)
_RETRIES = 3
# A queue is split in two (one half written while the other is decided) only from this many per half: below it,
# the second commit costs more than the overlap saves.
_MIN_SPLIT = 24


@dataclass(slots=True)
class _Pending:
    command: Command
    future: asyncio.Future[Appended]


class Appender:
    """The ledger's one writer: a queue of submitted commands, written in batches by one task."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: CheckpointSigner,
        *,
        default_floor: int,
        max_batch: int,
        cache_transfers: int = 100_000,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._committer = Committer(signer, default_floor=default_floor, cache_transfers=cache_transfers)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # The writer's own connection, held across batches: a pool round trip (and asyncpg's reset query on
        # every release) per batch would cost about as much as deciding it.
        self._conn: PoolConnectionProxy | None = None
        self.batches = 0
        self.commands = 0
        # Batches written so far, and the event set (and replaced) as each is: readers waiting for the log to grow.
        self.written = 0
        self._grown = asyncio.Event()

    @property
    def decided_ahead(self) -> int:
        """Batches written as decided while the batch before them was being written."""
        return self._committer.decided_ahead

    async def submit(self, command: Command) -> Appended:
        """Queue one command and wait until it is committed (or refused with a DomainError)."""
        if self._task is None or self._task.done() or self._closing:
            raise RuntimeError("the ledger is not accepting writes (stopped or stopping)")
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(command, future))
        self._wake.set()
        return await future

    async def wait_beyond(self, written: int, seconds: float) -> None:
        """Return once more than ``written`` batches have been written (see ``written``), or after ``seconds``: a
        reader polling the log waits here rather than asking again and again."""
        if self.written > written:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._grown.wait()

    def _note_written(self) -> None:
        self.written += 1
        grown, self._grown = self._grown, asyncio.Event()
        grown.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-appender")
        metrics.watch_queue(self._queue)

    async def stop(self, grace: float = 30.0) -> None:
        """Refuse new commands, finish the ones already submitted, then stop the writer."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        _fail(self._queue, RuntimeError("the ledger stopped before this command was written"))
        self._queue.clear()
        metrics.unwatch_queue(self._queue)
        await self._drop_connection()

    async def _connection(self) -> Connection:
        if self._conn is None or self._conn.is_closed():
            await self._drop_connection()
            self._conn = await self._pool.acquire()
        return self._conn

    async def _drop_connection(self) -> None:
        """Give the writer's connection back (the pool resets it, or discards it if it is broken)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)

    async def _run(self) -> None:
        """Write batches one after another. While one batch is being written, the next is already decided on the
        cached state (Python's work overlaps the database's); it is written only once the first has committed,
        and it is sent before the first batch's callers are answered, so the database is not kept waiting."""
        writing: asyncio.Task[list[_Answer]] | None = None
        batch: list[_Pending] = []  # taken from the queue, not yet handed to a writing task
        answers: list[_Answer] = []  # for a committed batch, not yet delivered
        try:
            while not (self._closing and not self._queue and writing is None):
                if writing is None and not self._queue:
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                batch = self._take(split=writing is None)
                ahead = self._decide_ahead(batch) if writing is not None and batch else None
                if writing is not None:
                    answers = await writing
                    writing = None
                    self._note_written()
                if batch:
                    self._committer.undecided = True
                    writing = asyncio.create_task(self._commit_with_retries(batch, ahead))
                    batch = []
                    await asyncio.sleep(0)  # let it send its statement
                if answers:
                    _answer(answers)
                    answers = []
                    await asyncio.sleep(0)  # let the answered callers submit again before the next batch is taken
        finally:
            # Cancelled (a stop that ran out of time): nobody may be left waiting.
            _answer(answers)
            _fail(batch, RuntimeError("the ledger stopped before this command was written"))
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

    def _take(self, *, split: bool) -> list[_Pending]:
        """The next batch from the queue. With nothing being written, a long queue is halved, so that the second
        half can be decided while the first is written."""
        n = min(len(self._queue), self._max_batch)
        if split and n >= 2 * _MIN_SPLIT:
            n = (n + 1) // 2
        batch = self._queue[:n]
        del self._queue[:n]
        return [p for p in batch if not p.future.done()]  # callers that gave up

    def _decide_ahead(self, batch: list[_Pending]) -> Ahead | None:
        """Decide ``batch`` on the cached state as the batch being written leaves it, when the cache holds all
        it needs; otherwise it is decided in turn."""
        return self._committer.decide_ahead([p.command for p in batch])

    async def _commit_with_retries(self, batch: list[_Pending], ahead: Ahead | None = None) -> list[_Answer]:
        """Commit the batch; return the answers for its callers (the caller delivers them). Failures are
        delivered here."""
        try:
            return await self._commit_or_fail(batch, ahead)
        except BaseException as exc:
            metrics.BATCHES_FAILED.inc()
            _fail(batch, exc)
            raise

    async def _commit_or_fail(self, batch: list[_Pending], ahead: Ahead | None) -> list[_Answer]:
        for attempt in range(1, _RETRIES + 1):
            try:
                outcomes = await self._commit(batch, ahead)
            except _TRANSIENT as exc:
                log.warning("ledger batch failed (attempt %d/%d): %s", attempt, _RETRIES, exc)
                await self._drop_connection()
                if attempt == _RETRIES:
                    metrics.BATCHES_FAILED.inc()
                    _fail(batch, exc)
                    return []
                await asyncio.sleep(0.05 * attempt)
            except Exception as exc:
                if len(batch) > 1:
                    # One bad command must not sink its neighbours: decide them one by one instead.
                    log.warning("ledger batch of %d commands failed (%s); retrying them one by one", len(batch), exc)
                    answers: list[_Answer] = []
                    for pending in batch:
                        answers += await self._commit_or_fail([pending], None)
                    return answers
                log.exception("ledger command failed")
                metrics.BATCHES_FAILED.inc()
                _fail(batch, exc)
                return []
            else:
                self.batches += 1
                self.commands += len(batch)
                metrics.BATCHES_WRITTEN.inc()
                metrics.BATCH_COMMANDS.observe(len(batch))
                return list(zip(batch, outcomes, strict=True))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _commit(self, batch: list[_Pending], ahead: Ahead | None) -> list[Appended | DomainError]:
        """Decide and write the batch on the writer's connection (``committer.py``)."""
        return await self._committer.commit(self._connection, [p.command for p in batch], ahead)


_Answer = tuple[_Pending, "Appended | DomainError"]


def _answer(answers: list[_Answer]) -> None:
    for pending, outcome in answers:
        if pending.future.done():
            continue  # the caller gave up
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            failed = RuntimeError(f"ledger write failed: {exc}")
            failed.__cause__ = exc  # so that the web layer can tell a lost database (503) from a bug (500)
            pending.future.set_exception(failed)
