"""Reading every entry bundle of a log once.

Bundles are prepared (framed, split and hashed into tiles) in worker processes, and decoded and replayed here.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import tempfile
import threading
from functools import partial
from multiprocessing import connection, forkserver
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import msgspec

from services.audit import tree
from services.audit.progress import Reporter
from services.audit.replay import Replay, decode_entries
from services.audit.report import Checks
from services.ledger.entries import LogEntry, entry_decoder
from shared import tiles

# Bundles per chunk of work handed to a worker process: enough (about 25 ms of work) that waiting for the GIL to
# pass a chunk on costs little, few enough that the last chunks can be shared out.
CHUNK_BUNDLES = 64
# Below this many entry bundles the worker processes cost more to start than they save.
PARALLEL_MIN_BUNDLES = 4 * CHUNK_BUNDLES


# Per entry bundle: its leaf hashes (a level-0 tile), the tile's root when full, what is wrong with the bundle, and
# whether the log's own stored level-0 tile is the same (None: not stored, or not compared).
Hashed = list[tuple[bytes, bytes | None, str | None, bool | None]]


class Chunks:
    """Bundles prepared in order, chunk by chunk, by worker processes or by this process.

    The replay takes the chunks in order. Workers and this process alike take the next chunk nobody has claimed:
    this process when the chunk the replay needs next is not ready, so that it never stands idle and no chunk is
    left to prepare and replay after the workers are done. Each worker reports on a pipe of its own that this
    process reads only when it needs to (a ``ProcessPoolExecutor`` would hand work out through a thread that a
    busy replay starves of the GIL).
    """

    def __init__(self, directory: Path, size: int, workers: int, compare: bool) -> None:
        self.directory = str(directory)
        self.size = size
        self.compare = compare
        count = tree.bundle_count(size)
        self.chunks = [(lo, min(lo + CHUNK_BUNDLES, count)) for lo in range(0, count, CHUNK_BUNDLES)]
        self.done: dict[int, list[tree.Prepared]] = {}
        self.by_workers: set[int] = set()
        self.spill: tempfile.TemporaryDirectory[str] | None = None
        self.claims: Any = None
        self.start_method: str | None = None  # how the workers were started, if any was
        self.processes: list[BaseProcess] = []
        self.pipes: list[Connection] = []
        if workers and count >= PARALLEL_MIN_BUNDLES:
            context = worker_context()
            self.start_method = context.get_start_method()
            self.spill = tempfile.TemporaryDirectory(prefix="timebank-audit-")
            self.claims = context.Value("q", 0)
            for _ in range(workers):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=tree.prepare_chunks,
                    args=(self.directory, size, compare, self.chunks, self.spill.name, self.claims, writer),
                    daemon=True,
                )
                process.start()
                writer.close()
                self.processes.append(process)
                self.pipes.append(reader)

    def _here(self, position: int) -> None:
        lo, hi = self.chunks[position]
        self.done[position] = tree.prepare_bundles(self.directory, lo, hi, self.size, self.compare)

    def _claim(self) -> int | None:
        """Claim the next chunk no worker has claimed; None when none is left."""
        with self.claims.get_lock():
            position = int(self.claims.value)
            if position >= len(self.chunks):
                return None
            self.claims.value = position + 1
            return position

    def _receive(self, timeout: float | None) -> None:
        """Take in what the workers have reported (waiting up to ``timeout`` for something); drop dead workers."""
        for pipe in connection.wait(self.pipes, timeout):
            assert isinstance(pipe, Connection)
            try:
                message = pipe.recv()
            except EOFError:
                message = None  # the worker died; whatever it had claimed is prepared here
            if message is None:
                self.pipes.remove(pipe)
                continue
            position, spilled = message
            assert self.spill is not None
            path = Path(f"{self.spill.name}/{self.chunks[position][0]}")
            self.done[position] = tree.unspill(spilled, path)
            self.by_workers.add(position)

    def get(self, position: int) -> list[tree.Prepared]:
        """Chunk ``position``, prepared."""
        while position not in self.done:
            if not self.pipes:
                self._here(position)  # no workers (left)
                break
            self._receive(0)
            if position in self.done:
                break
            claimed = self._claim()
            if claimed is not None:
                self._here(claimed)
            else:
                self._receive(None)
        return self.done.pop(position)

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            process.join()
        for pipe in self.pipes:
            pipe.close()
        if self.spill is not None:
            self.spill.cleanup()


def worker_context() -> ForkContext | ForkServerContext | SpawnContext:
    """How worker processes are started: forked when that is safe, else forked by a fork server.

    A forked worker starts at once, while a spawned one first imports the program again (the `timebank` command
    with all it imports: about half a second in which this process prepares bundles alone). Forking a process
    that runs other threads can deadlock the child (a lock another thread held stays locked in it), and an
    audit often runs beside threads: the resolver threads of an HTTP download, a child watcher. Then the workers
    are forked by multiprocessing's fork server, a process that runs no other thread and has already imported
    what a worker runs (``warm_up`` starts it before it is needed).
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return _fork_server()
    return multiprocessing.get_context("spawn")


def _fork_server() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([tree.__name__])
    return context


def warm_up(size: int, jobs: int, download: bool) -> None:
    """Start the fork server now if a log of ``size`` entries will need workers that may not be forked directly
    (see worker_context): another thread runs already, or the ``download`` will start resolver threads. The
    fork server then imports what a worker runs while the log downloads."""
    if jobs < 2 or tree.bundle_count(size) < PARALLEL_MIN_BUNDLES:
        return
    if (download or threading.active_count() > 1) and "forkserver" in multiprocessing.get_all_start_methods():
        _fork_server()
        forkserver.ensure_running()


def scan(
    directory: Path,
    size: int,
    snapshot_at: int | None,
    checks: Checks,
    progress: Reporter,
    jobs: int,
    compare: bool = False,
) -> tuple[Hashed, Replay, dict[str, int] | None]:
    """Prepare (frame and hash) every bundle, in worker processes if ``jobs`` > 1, and decode and replay them here.

    With ``compare``, the level-0 hash tiles stored in ``directory`` (an export's) are compared on the way."""
    replay = Replay(checks)
    snapshot: dict[str, int] | None = {} if snapshot_at == 0 else None
    chunks = Chunks(directory, size, max(0, jobs - 1), compare)
    hashed: Hashed = []
    task = progress.task("verify", size)
    gc_was_enabled = gc.isenabled()
    # Millions of small objects are made and kept here and none of them forms a cycle: the cyclic collector
    # would only walk them again and again.
    gc.disable()
    try:
        held: list[tuple[int, list[LogEntry | None]]] = []  # the last two bundles replayed: (first index, entries)
        for position, (lo, _) in enumerate(chunks.chunks):
            for index, prepared in enumerate(chunks.get(position), lo):
                hashed.append((prepared.tile, prepared.root, prepared.error, prepared.same))
                width = tree.bundle_width(size, index)
                first = index * tiles.TILE_WIDTH
                try:
                    entries = _decode(directory, index, width, prepared, checks)
                except tree.BundleError:
                    task.advance(width)  # the bundle is missing: log.entries names it
                    continue
                held = [*held[-1:], (first, entries)]
                if snapshot_at is not None and first < snapshot_at <= first + len(entries):
                    cut = snapshot_at - first
                    replay.size = first
                    replay.replay(entries[:cut])
                    snapshot = replay.balances()
                    entries = entries[cut:]
                    first = snapshot_at
                replay.size = first
                replay.replay(entries)
                replay.settle(partial(_read_held, held))
                task.advance(width)
        replay.finish(partial(_read_again, directory, size))
        task.done()
    finally:
        chunks.close()
        if gc_was_enabled:
            gc.enable()
    replay.size = min(replay.size, size)
    return hashed, replay, snapshot


def _read_held(held: list[tuple[int, list[LogEntry | None]]], indexes: list[int]) -> dict[int, LogEntry | None]:
    """The entries at these indexes that lie in the bundles held (first index, entries); the others are left out."""
    out: dict[int, LogEntry | None] = {}
    for index in indexes:
        for first, entries in held:
            if 0 <= index - first < len(entries):
                out[index] = entries[index - first]
    return out


def _read_again(directory: Path, size: int, indexes: list[int]) -> dict[int, LogEntry | None]:
    """The entries at these (sorted) indexes, read and decoded again, one bundle at a time."""
    out: dict[int, LogEntry | None] = {}
    for bundle, group in itertools.groupby(indexes, lambda index: index // tiles.TILE_WIDTH):
        entries = tree.split_bundle(tree.read_bundle(directory, bundle, tree.bundle_width(size, bundle)))
        for index in group:
            try:
                out[index] = entry_decoder.decode(entries[index - bundle * tiles.TILE_WIDTH])
            except msgspec.DecodeError:
                out[index] = None
    return out


def _decode(directory: Path, index: int, width: int, prepared: tree.Prepared, checks: Checks) -> list[LogEntry | None]:
    return decode_entries(
        prepared.array, partial(tree.read_bundle, directory, index, width), index * tiles.TILE_WIDTH, checks
    )
