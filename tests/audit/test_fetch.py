"""What the audit's downloads do against a server that closes kept connections, cuts answers short, or refuses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from services.audit.fetch import Fetcher, FetchError
from services.audit.source import HttpSource, SourceError

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


@asynccontextmanager
async def server(answer: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A local HTTP server: ``answer(request head, writer)`` answers, and says whether to keep the connection."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                if not await answer(head, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        listening.close()


def answer_with(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def test_answers_come_back_and_connections_are_kept_for_the_next_request() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer_with(200, head.split(b" ")[1]))
        return True

    async with server(answer) as (url, heads):
        fetcher = Fetcher(timeout=5)
        try:
            assert await fetcher.get(url + "/log/proof/bundle", {"index": 7}) == (200, b"/log/proof/bundle?index=7")
            assert await fetcher.get(url + "/log/checkpoint") == (200, b"/log/checkpoint")
        finally:
            await fetcher.close()
    assert len(heads) == 2
    assert b"Host: 127.0.0.1:" in heads[0]


async def test_a_kept_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async def answer_once(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer_with(200, b"ok"))
        return False  # the server closes every connection after one answer, without saying so

    async with server(answer_once) as (url, heads):
        fetcher = Fetcher(timeout=5)
        try:
            for _ in range(3):
                assert await fetcher.get(url + "/log/checkpoint") == (200, b"ok")
                await asyncio.sleep(0.05)
        finally:
            await fetcher.close()
    assert len(heads) == 3


async def test_an_answer_cut_short_is_an_error() -> None:
    async def cut_short(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        return False

    async with server(cut_short) as (url, _):
        fetcher = Fetcher(timeout=5)
        try:
            with pytest.raises(FetchError):
                await fetcher.get(url + "/log/tile/entries/000")
        finally:
            await fetcher.close()


class Counted:
    """A progress task that counts what it was told."""

    def __init__(self) -> None:
        self.count = 0

    def advance(self, amount: int) -> None:
        self.count += amount

    def done(self) -> None:
        pass


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_bundles_are_cached_whole_and_one_the_node_refuses_stays_missing(tmp_path: Path) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        path = head.split(b" ")[1]
        refused = path == b"/log/tile/entries/001"
        writer.write(answer_with(404, b"no such tile") if refused else answer_with(200, b"bundle " + path))
        return True

    threads = threading.active_count()
    async with server(answer) as (url, _):
        source = HttpSource(url, tmp_path)
        task = Counted()
        try:
            assert await source.entries_dir(600, task) == tmp_path
        finally:
            await source.close()
    assert files_under(tmp_path) == {
        "tile/entries/000": b"bundle /log/tile/entries/000",
        "tile/entries/002.p/88": b"bundle /log/tile/entries/002.p/88",
    }
    assert task.count == 600
    # The cache's writing threads are gone once the download is: the hashing workers may be forked.
    assert threading.active_count() == threads


async def test_a_bundle_cut_short_fails_the_download_and_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/log/tile/entries/" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            await writer.drain()
            return False
        writer.write(answer_with(200, b"checkpoint"))
        return True

    async with server(answer) as (url, _):
        source = HttpSource(url, tmp_path, concurrency=2)
        try:
            with pytest.raises(SourceError):
                await source.entries_dir(256, Counted())
        finally:
            await source.close()
    assert files_under(tmp_path) == {}


async def test_an_unreachable_server_is_an_error() -> None:
    fetcher = Fetcher(timeout=5)
    with pytest.raises(FetchError):
        await fetcher.get("http://127.0.0.1:1/log/checkpoint")
