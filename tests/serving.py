"""Serving an ASGI app with uvicorn in the test's own event loop, for tests that need concurrent requests (Litestar's
test client handles one request at a time, blocking the loop while it does)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, cast

import uvicorn

from services.node.processes import LOCALHOST, free_port


class InLoopServer(uvicorn.Server):
    """uvicorn in the test's event loop, leaving pytest's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    """Whether the server is up; raises if it stopped while starting."""
    if task.done():
        task.result()
        raise AssertionError("the server stopped while starting")
    return server.started


@asynccontextmanager
async def serving(app: object, within: float = 60.0) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) on a loopback port until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        cast("Any", app),
        host=LOCALHOST,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        lifespan="on",
        loop="asyncio",
    )
    server = InLoopServer(config)
    task = asyncio.create_task(server.serve(), name="serving an app in the test's loop")
    try:
        for _ in range(int(within / 0.02)):
            if await started(server, task):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"the server did not start within {within} s")
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        await task
