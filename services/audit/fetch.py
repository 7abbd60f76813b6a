"""The audit's downloads: keep-alive HTTP/1.1 GETs, on h11 over asyncio streams.

An audit of a large log makes thousands of requests (entry bundles, tiles). httpx spent over a millisecond of
Python on each (its pool, anyio and h11, layered); h11 alone, on connections kept here, spends a fifth of that.
This client does only what the audit needs: GET over http or https, redirects not followed, no proxies, no
content encodings (none are asked for), each connect and each read bounded by a timeout. Bodies come back whole,
in memory (an entry bundle is tens of kilobytes); writing them to disk is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import h11

_READ_SIZE = 1 << 16
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchError(Exception):
    """No complete answer: the connection failed or timed out, or the server's HTTP could not be read."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection
    # Answers it has carried: a connection that carried one was kept alive, and the server may have closed it since.
    answers: int = 0


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    # The Host header: the URL's host and port as written.
    authority: str
    # Path and query.
    resource: str


def _target(url: str, params: Mapping[str, int] | None) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise FetchError(f"not an http(s) URL: {url}")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise FetchError(f"{url}: {exc}") from None
    query = "&".join(q for q in (parts.query, urlencode(params or {})) if q)
    resource = (parts.path or "/") + (f"?{query}" if query else "")
    authority = parts.netloc.rpartition("@")[2]
    return _Target(parts.scheme, parts.hostname, port, authority, resource)


class Fetcher:
    """GETs with connections kept alive per origin (as many as requests were in flight at once)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def get(self, url: str, params: Mapping[str, int] | None = None) -> tuple[int, bytes]:
        """(status, body) of a complete answer; FetchError if none came."""
        target = _target(url, params)
        origin = (target.scheme, target.host, target.port)
        idle = self._idle.setdefault(origin, [])
        while idle:
            # A kept connection the server has closed meanwhile fails before any answer: then try the next one.
            connection = idle.pop()
            with contextlib.suppress(_Stale):
                return await self._exchange(connection, target, idle)
        return await self._exchange(await self._connect(target), target, idle)

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.writer.close()
        self._idle.clear()

    async def _connect(self, target: _Target) -> _Connection:
        tls = None
        if target.scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(target.host, target.port, ssl=tls, limit=_READ_SIZE)
        except (OSError, TimeoutError) as exc:
            raise FetchError(f"cannot connect to {target.authority}: {exc!r}") from None
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    async def _exchange(self, connection: _Connection, target: _Target, idle: list[_Connection]) -> tuple[int, bytes]:
        http = connection.http
        answered = False
        try:
            request = h11.Request(
                method="GET", target=target.resource, headers=[("Host", target.authority), ("Accept", "*/*")]
            )
            connection.writer.write(http.send(request) + http.send(h11.EndOfMessage()))
            status, parts = 0, []
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    async with asyncio.timeout(self.timeout):
                        http.receive_data(await connection.reader.read(_READ_SIZE))
                elif isinstance(event, h11.Response):
                    answered, status = True, event.status_code
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("the server closed the connection")
        except BaseException as exc:
            # Cancelled or failed: the connection is in an unknown state, and a partial body is dropped.
            connection.writer.close()
            if not isinstance(exc, (OSError, TimeoutError, h11.ProtocolError)):
                raise
            if not answered and connection.answers:
                raise _Stale from None
            raise FetchError(f"GET {target.authority}{target.resource}: {exc!r}") from None
        connection.answers += 1
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            idle.append(connection)
        else:
            connection.writer.close()
        return status, b"".join(parts)


class _Stale(Exception):
    """A kept-alive connection failed before its answer began: the request was not served."""
