"""The per-address sign-in limit counts the address a request really comes from: X-Forwarded-For is believed only
from the proxies the settings trust (none by default), served as `timebank serve` serves the node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec
import uvicorn

from services.exchange.app import create_app
from services.node.processes import free_port
from services.node.serve import server_config
from shared.settings import HttpSettings
from tests.exchange.support import exchange_settings

LIMIT = 2


@asynccontextmanager
async def served(ledger_url: str, database_url: str, trusted_proxies: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    """The exchange served by uvicorn configured as the node configures it, on a loopback port."""
    settings = exchange_settings(login_max_failures_per_address=LIMIT)
    settings = msgspec.structs.replace(settings, http=HttpSettings(port=free_port(), trusted_proxies=trusted_proxies))
    app = create_app(settings, database_url=database_url, ledger_url=ledger_url)
    config = server_config(settings, app)
    config.loop, config.http = "asyncio", "h11"  # served inside the test's event loop
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the exchange stopped while starting"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http.port}", trust_env=False) as client:
            yield client
    finally:
        server.should_exit = True
        await serving


async def _failed_sign_ins(client: httpx.AsyncClient, count: int) -> list[int]:
    """Wrong passwords for ``count`` different emails, each claiming to be forwarded for a different address."""
    statuses = []
    for n in range(count):
        r = await client.post(
            "/api/sessions",
            json={"email": f"nobody{n}@example.org", "password": "not the password"},
            headers={"X-Forwarded-For": f"203.0.113.{n + 1}"},
        )
        statuses.append(r.status_code)
    return statuses


async def test_a_forwarded_address_from_an_untrusted_client_does_not_escape_the_limit(
    ledger_url: str, database_url: str
) -> None:
    async with served(ledger_url, database_url, trusted_proxies=[]) as client:
        assert await _failed_sign_ins(client, LIMIT + 1) == [401] * LIMIT + [429]


async def test_a_trusted_proxy_names_the_client_address(ledger_url: str, database_url: str) -> None:
    async with served(ledger_url, database_url, trusted_proxies=["127.0.0.1"]) as client:
        assert await _failed_sign_ins(client, LIMIT + 1) == [401] * (LIMIT + 1)
