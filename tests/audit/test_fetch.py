"""What the audit's downloads do against a server that closes kept connections, cuts answers short, or refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from services.audit.fetch import Fetcher, FetchError

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


async def test_an_answer_cut_short_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    async def cut_short(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        return False

    into = tmp_path / "tile" / "entries" / "000"
    async with server(cut_short) as (url, _):
        fetcher = Fetcher(timeout=5)
        try:
            with pytest.raises(FetchError):
                await fetcher.get(url + "/log/tile/entries/000", into=into)
        finally:
            await fetcher.close()
    assert not into.exists()
    assert list(into.parent.iterdir()) == []


async def test_a_whole_answer_is_written_into_the_file_and_a_refusal_is_returned(tmp_path: Path) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        found = b"/missing" not in head
        writer.write(answer_with(200, b"bundle bytes") if found else answer_with(404, b"no such tile"))
        return True

    into = tmp_path / "bundle"
    async with server(answer) as (url, _):
        fetcher = Fetcher(timeout=5)
        try:
            assert await fetcher.get(url + "/bundle", into=into) == (200, b"")
            assert await fetcher.get(url + "/missing", into=tmp_path / "missing") == (404, b"no such tile")
        finally:
            await fetcher.close()
    assert into.read_bytes() == b"bundle bytes"
    assert not (tmp_path / "missing").exists()


async def test_an_unreachable_server_is_an_error() -> None:
    fetcher = Fetcher(timeout=5)
    with pytest.raises(FetchError):
        await fetcher.get("http://127.0.0.1:1/log/checkpoint")
