"""Fixtures for exchange tests: a real ledger (`timebank serve`) to talk to, and a database with the exchange schema.

``ledger_url`` is one ledger process for the whole session, in a database of its own (the ledger and the exchange
may run apart): tests share it, so each test opens its own accounts with keys no other test uses (``unique``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import uvicorn
from litestar.testing import AsyncTestClient

from services.exchange import store
from services.exchange.app import create_app as create_exchange_app
from services.ledger.client import LedgerClient
from services.node.postgres import PostgresServer
from services.node.processes import free_port
from shared.db import create_pool, migrate
from tests.exchange.support import Exchange, exchange_settings
from tests.ledger.conftest import TOKENS
from tests.ledger.processes import ledger_on_own_database


@pytest.fixture(scope="session")
def ledger_url(postgres_server: PostgresServer) -> Iterator[str]:
    """Base URL of a running ledger, shared by the session's exchange tests."""
    with ledger_on_own_database(postgres_server, "exchange_ledger") as url:
        yield url


@pytest.fixture
async def ledger_client(ledger_url: str) -> AsyncIterator[LedgerClient]:
    """A started client with the ledger's service token."""
    async with LedgerClient(ledger_url, TOKENS["service"]) as client:
        yield client


@pytest.fixture
async def exchange_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh database with the exchange's migrations applied."""
    pool = await create_pool(database_url, min_size=1, max_size=6)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "exchange", store.MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def unique() -> str:
    """A prefix no other test uses, for idempotency keys on the shared ledger."""
    return secrets.token_hex(6)


@pytest.fixture
async def exchange(ledger_url: str, database_url: str) -> AsyncIterator[Exchange]:
    """The exchange app on a fresh database, talking to the session's real ledger over HTTP."""
    app = create_exchange_app(exchange_settings(), database_url=database_url, ledger_url=ledger_url)
    async with AsyncTestClient(app=app) as client:
        yield Exchange(app, client, database_url)


@pytest.fixture
async def served_exchange(ledger_url: str, database_url: str) -> AsyncIterator[Exchange]:
    """The exchange app served over real HTTP by uvicorn (in this process, on a free port), e.g. for a browser.

    Its ``client`` is an httpx client on the server's address (``client.base_url``).
    """
    app = create_exchange_app(exchange_settings(), database_url=database_url, ledger_url=ledger_url)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws="none")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                pytest.fail("the exchange server stopped while starting")
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Exchange(app, client, database_url)
    finally:
        server.should_exit = True
        await serving
