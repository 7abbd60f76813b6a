"""Where an audit reads a log from: a node over HTTP, or a directory written by ``timebank export``.

Both sides look the same to the checks (``Source``): the latest signed checkpoint, the served balances, a
directory of C2SP tlog-tiles entry bundles covering the checkpoint, hash tiles, and proofs. Nothing a source
returns is trusted: every byte is checked against the checkpoint signature before it counts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import msgspec

from services.audit.fetch import Fetcher, FetchError
from services.audit.progress import Task
from services.audit.tree import BundleError, bundle_count, bundle_width, read_bundle
from shared import merkle, tiles

BALANCES_FILE = "balances.json"
CHECKPOINT_FILE = "checkpoint"


class SourceError(Exception):
    """The source could not be read at all (unreachable node, not an export directory, ...)."""


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    balance: int


class ServedBalances(msgspec.Struct, frozen=True, kw_only=True):
    """What ``GET /log/balances`` serves: every account's balance after the first ``size`` entries."""

    size: int
    accounts: list[Balance]


TileKey = tuple[int, int]


class Source(Protocol):
    description: str
    # True when the source holds the log's hash tiles locally, so comparing them all costs no downloads.
    holds_tiles: bool

    async def checkpoint(self) -> bytes: ...

    async def balances(self) -> ServedBalances | None: ...

    async def entries_dir(self, size: int, task: Task) -> Path:
        """A directory holding every entry bundle of the first ``size`` entries (downloading what is missing)."""
        ...

    async def hash_tiles(self, size: int, keys: set[TileKey]) -> dict[TileKey, bytes]:
        """The hash tiles ``keys`` as the source serves them for a tree of ``size``; absent ones are left out."""
        ...

    async def proof_bundle(self, index: int) -> str:
        """A C2SP tlog-proof of entry ``index`` under the source's checkpoint."""
        ...

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """The RFC 9162 consistency proof from size ``old`` to size ``new``."""
        ...

    async def close(self) -> None: ...


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, renamed once written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace_with(path, data)


def _replace_with(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _CacheWriter:
    """Writes downloaded entry bundles into the cache on threads of its own, while the download goes on.

    Creating a file is the slowest step of a bundle's download on a busy disk (a file system's journal is shared
    with every other writer on the machine); written here, the next requests are in flight meanwhile. The threads
    end with the download (``close``), so that the hashing workers can still be forked from a single thread.
    """

    def __init__(self, threads: int = 2) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="audit-cache")
        self._made: set[Path] = set()  # directories known to exist: one mkdir per directory, not per bundle

    async def write(self, path: Path, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write, path, data)

    def _write(self, path: Path, data: bytes) -> None:
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        _replace_with(path, data)

    def close(self) -> None:
        """Wait for the writes under way, and end the threads."""
        self._pool.shutdown(wait=True)


def _bundle_present(root: Path, index: int, width: int) -> bool:
    return (root / tiles.entries_path(index, width)).exists() or (root / tiles.entries_path(index)).exists()


def _range_hasher(tile_set: dict[TileKey, bytes]) -> Callable[[int, int], bytes]:
    def range_hash(lo: int, hi: int) -> bytes:
        return tiles.range_hash_from_tiles(lo, hi, tile_set)

    return range_hash


def format_proof_bundle(entry: bytes, index: int, proof: list[bytes], note: bytes) -> str:
    """A C2SP tlog-proof: the entry bytes ride in ``extra``, then the index, the proof and the checkpoint."""
    lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(entry).decode(), f"index {index}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n\n" + note.decode()


class DirectorySource:
    """A log exported by ``timebank export``: checkpoint, tile/..., tile/entries/..., balances.json."""

    holds_tiles = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)
        if not (root / CHECKPOINT_FILE).is_file():
            raise SourceError(f"{root} holds no {CHECKPOINT_FILE}: not a log exported by `timebank export`")

    async def checkpoint(self) -> bytes:
        return (self.root / CHECKPOINT_FILE).read_bytes()

    async def balances(self) -> ServedBalances | None:
        try:
            data = (self.root / BALANCES_FILE).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return msgspec.json.decode(data, type=ServedBalances)
        except msgspec.DecodeError as exc:
            raise SourceError(f"{self.root / BALANCES_FILE} is not a balances file: {exc}") from None

    async def entries_dir(self, size: int, task: Task) -> Path:
        task.advance(size)
        return self.root

    async def hash_tiles(self, size: int, keys: set[TileKey]) -> dict[TileKey, bytes]:
        out: dict[TileKey, bytes] = {}
        for level, index in keys:
            width = tiles.tile_width(size, level, index)
            if width == 0:
                continue
            with contextlib.suppress(FileNotFoundError):
                out[(level, index)] = (self.root / tiles.tile_path(level, index, width)).read_bytes()
        return out

    async def proof_bundle(self, index: int) -> str:
        note = await self.checkpoint()
        size = _size_of(note)
        if not 0 <= index < size:
            raise SourceError(f"entry {index} is not in the exported log of {size} entries")
        bundle, position = divmod(index, tiles.TILE_WIDTH)
        try:
            data = read_bundle(self.root, bundle, bundle_width(size, bundle))
        except BundleError as exc:
            raise SourceError(str(exc)) from None
        entry = _nth_entry(data, position)
        ranges = merkle.inclusion_ranges(index, size)
        tile_set = await self.hash_tiles(size, tiles.tiles_for_ranges(ranges))
        try:
            proof = merkle.inclusion_proof(index, size, _range_hasher(tile_set))
        except KeyError as exc:
            raise SourceError(f"the export lacks a hash tile the proof needs: {exc}") from None
        return format_proof_bundle(entry, index, proof, note)

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        ranges = merkle.consistency_ranges(old, new)
        tile_set = await self.hash_tiles(new, tiles.tiles_for_ranges(ranges))
        try:
            return merkle.consistency_proof(old, new, _range_hasher(tile_set))
        except KeyError as exc:
            raise SourceError(f"the export lacks a hash tile the proof needs: {exc}") from None

    async def close(self) -> None:
        pass


def _size_of(note: bytes) -> int:
    lines = note.split(b"\n", 2)
    try:
        return int(lines[1])
    except (IndexError, ValueError):
        raise SourceError("the checkpoint has no size line") from None


def _nth_entry(data: bytes, position: int) -> bytes:
    p = 0
    for _ in range(position):
        p += 2 + ((data[p] << 8) | data[p + 1])
    n = (data[p] << 8) | data[p + 1]
    return data[p + 2 : p + 2 + n]


class HttpSource:
    """A running node, read through its public log endpoints; entry bundles are kept in a cache directory.

    Entry bundles never change once a log has them (a partial bundle's path names its width), so the cache makes
    an interrupted download resumable and a second audit fetch only what is new. Cached bytes are verified like
    downloaded ones: a node that rewrote entries the cache already holds fails the audit.
    """

    holds_tiles = False

    def __init__(self, base_url: str, cache: Path, *, concurrency: int = 8, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        self.description = self.base
        self.cache = cache
        self.concurrency = concurrency
        self._timeout = timeout
        self._client: Fetcher | None = None
        self._located = False
        self._locating = asyncio.Lock()

    def _http(self) -> Fetcher:
        if self._client is None:
            # One client for the whole audit: its connections are kept alive and reused bundle after bundle (as
            # many as ``concurrency`` workers have requests in flight). Each connect and each read is bounded by
            # the timeout, not a whole download. An auditor names the node it means: no proxy is put between.
            self._client = Fetcher(self._timeout)
        return self._client

    async def _locate(self) -> None:
        """Find the ledger: at the URL given, or under /ledger of a node that serves the exchange at its root."""
        async with self._locating:
            if self._located:
                return
            status, _ = await self._fetch(f"{self.base}/log/checkpoint", None)
            if status == 404 and (await self._fetch(f"{self.base}/ledger/log/checkpoint", None))[0] == 200:
                self.base += "/ledger"
                self.description = self.base
            self._located = True

    async def _get(self, path: str, params: dict[str, int] | None = None) -> tuple[int, bytes]:
        """GET a path of the ledger; returns (status, body)."""
        if not self._located:
            await self._locate()
        return await self._fetch(f"{self.base}{path}", params)

    async def _fetch(self, url: str, params: dict[str, int] | None) -> tuple[int, bytes]:
        """GET with a few retries on connection errors and 5xx answers; returns (status, body)."""
        status = 0
        for attempt in range(5):
            try:
                status, body = await self._http().get(url, params)
                if status < 500:
                    return status, body
            except FetchError as exc:
                if attempt == 4:
                    raise SourceError(f"cannot read {url}: {exc}") from None
            await asyncio.sleep(0.2 * 2**attempt)
        raise SourceError(f"{url} keeps failing (HTTP {status})")

    async def _get_ok(self, path: str, params: dict[str, int] | None = None) -> bytes:
        status, body = await self._get(path, params)
        if status != 200:
            raise SourceError(f"{self.base}{path} answered HTTP {status}: {body[:200]!r}")
        return body

    async def checkpoint(self) -> bytes:
        return await self._get_ok("/log/checkpoint")

    async def balances(self) -> ServedBalances | None:
        status, body = await self._get("/log/balances")
        if status in (401, 403, 404):
            return None
        if status != 200:
            raise SourceError(f"{self.base}/log/balances answered HTTP {status}")
        try:
            return msgspec.json.decode(body, type=ServedBalances)
        except msgspec.DecodeError as exc:
            raise SourceError(f"{self.base}/log/balances is not a balances document: {exc}") from None

    async def entries_dir(self, size: int, task: Task) -> Path:
        todo: list[int] = []
        # An empty cache (the first audit of a log) holds no bundle to look for.
        cached = (self.cache / "tile" / "entries").is_dir()
        for index in range(bundle_count(size)):
            width = bundle_width(size, index)
            if cached and _bundle_present(self.cache, index, width):
                task.advance(width)
            else:
                todo.append(index)
        queue = iter(todo)
        writer = _CacheWriter()

        async def worker() -> None:
            for index in queue:
                width = bundle_width(size, index)
                path = tiles.entries_path(index, width)
                status, body = await self._get("/log/" + path)
                if status == 200:
                    await writer.write(self.cache / path, body)
                elif status != 404:
                    raise SourceError(f"{self.base}/log/{path} answered HTTP {status}")
                # A bundle the node cannot serve stays missing; the audit reports those entries.
                task.advance(width)

        workers = [asyncio.ensure_future(worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            # One failed (or the audit was cancelled): the others stop too, before the writer's threads end.
            for running in workers:
                running.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            writer.close()
        return self.cache

    async def hash_tiles(self, size: int, keys: set[TileKey]) -> dict[TileKey, bytes]:
        out: dict[TileKey, bytes] = {}
        pending = iter(sorted(keys))

        async def worker() -> None:
            for level, index in pending:
                width = tiles.tile_width(size, level, index)
                if width == 0:
                    continue
                status, body = await self._get("/log/" + tiles.tile_path(level, index, width))
                if status == 200:
                    out[(level, index)] = body

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return out

    async def proof_bundle(self, index: int) -> str:
        return (await self._get_ok("/log/proof/bundle", {"index": index})).decode("utf-8", "replace")

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        body = await self._get_ok("/log/proof/consistency", {"old": old, "new": new})
        try:
            proof = msgspec.json.decode(body, type=_ConsistencyProof)
            return [base64.b64decode(h, validate=True) for h in proof.proof]
        except (msgspec.DecodeError, ValueError) as exc:
            raise SourceError(f"the node's consistency proof is malformed: {exc}") from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


class _ConsistencyProof(msgspec.Struct):
    proof: list[str]
