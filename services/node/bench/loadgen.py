"""The benchmarks' load generator: a minimal HTTP/1.1 client for the measured requests.

A general client (httpx, which the project uses everywhere else) spends several times the CPU per request, and
with 64 requests in flight its connection pool costs more than the server being measured; on a shared 2-CPU
machine that CPU is taken from the node and PostgreSQL. The requests and answers are the same.
"""

from __future__ import annotations

import asyncio


class LoadClient:
    """Keep-alive connections (one per request in flight), JSON POSTs, answers with a Content-Length or chunked."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, headers: bytes, body: bytes) -> tuple[int, bytes]:
        reader, writer = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path.encode(), self.host.encode(), len(body), headers, body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:-2])
        }
        if fields.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                chunks.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            data = b"".join(chunks)
        else:
            data = await reader.readexactly(int(fields.get(b"content-length", b"0")))
        if fields.get(b"connection") == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status, data

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
