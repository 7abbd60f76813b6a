"""What an operator's Prometheus scrapes from a running ledger: its HTTP traffic and its group-commit writer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from services.ledger.app import create_app
from services.node.processes import free_port
from shared.note import Signer
from tests.ledger.conftest import ORIGIN, auth, ledger_settings

Client = AsyncTestClient[Litestar] | httpx.AsyncClient
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ACCOUNT_ROUTE = {"app_name": "ledger", "method": "GET", "path": "/accounts/{account_id}", "status_code": "200"}


async def scrape(client: Client) -> Samples:
    """Every sample ``/metrics`` serves, keyed by name and labels, read with Prometheus's own text parser."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (at most ten seconds) until ``check`` holds."""
    async with asyncio.timeout(10):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    app = create_app(ledger_settings(), database_url=database_url, signer=Signer.generate(ORIGIN))
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[Client]:
    """The ledger served over real HTTP by uvicorn in this event loop: the test client would serve one request at
    a time, and the queue only fills with requests in flight together."""
    app = create_app(ledger_settings(), database_url=database_url, signer=Signer.generate(ORIGIN))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, access_log=False, ws="none")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                pytest.fail("the ledger server stopped while starting")
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await serving


async def open_account(client: Client, key: str) -> str:
    r = await client.post("/accounts", json={"key": key}, headers=auth("coordinator"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def transfer(client: Client, key: str, payer: str, payee: str) -> httpx.Response:
    body = {"key": key, "payer": payer, "payee": payee, "minutes": 5}
    return await client.post("/transfers", json=body, headers=auth("service"))


async def test_requests_are_counted_and_timed_per_route_and_service(client: Client) -> None:
    a = await open_account(client, "metrics-a")
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get(f"/accounts/{a}", headers=auth("auditor"))).status_code == 200
    assert (await client.get("/accounts/acct_missing", headers=auth("auditor"))).status_code == 404
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # One series per route template and service, whatever the account id in the URL.
    assert moved("timebank_http_requests_total", **ACCOUNT_ROUTE) == 3
    assert moved("timebank_http_request_duration_seconds_count", **ACCOUNT_ROUTE) == 3
    assert moved("timebank_http_request_duration_seconds_sum", **ACCOUNT_ROUTE) > 0
    assert moved("timebank_http_requests_total", **{**ACCOUNT_ROUTE, "status_code": "404"}) == 1
    assert not any(dict(labels).get("path", "").startswith("/accounts/acct_") for _, labels in after)


async def test_writer_reports_its_batches_and_the_commands_waiting_for_it(served: Client, database_url: str) -> None:
    client = served
    a = await open_account(client, "metrics-payer")
    b = await open_account(client, "metrics-payee")
    before = await scrape(client)

    # Hold the writer: while this transaction locks the log, the first transfer's batch cannot be written, and
    # the ten sent after it wait in the writer's queue.
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE ledger.entries IN ACCESS EXCLUSIVE MODE")
        first = asyncio.create_task(transfer(client, "metrics-t0", a, b))
        await asyncio.sleep(0.3)
        waiting = [asyncio.create_task(transfer(client, f"metrics-t{i}", a, b)) for i in range(1, 11)]

        async def ten_queued() -> bool:
            return value(await scrape(client), "timebank_ledger_queue_depth") == 10

        await eventually(ten_queued)
        await tx.rollback()
    finally:
        await conn.close()
    for response in await asyncio.gather(first, *waiting):
        assert response.status_code == 201, response.text
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "timebank_ledger_queue_depth") == 0
    # Two batches: the first transfer alone, then the ten that queued behind it, committed together.
    assert moved("timebank_ledger_batches_total", outcome="written") == 2
    assert moved("timebank_ledger_batches_total", outcome="failed") == 0
    assert moved("timebank_ledger_batch_commands_count") == 2
    assert moved("timebank_ledger_batch_commands_sum") == 11
    assert moved("timebank_ledger_batch_commands_bucket", le="1.0") == 1
    assert (
        moved("timebank_ledger_batch_commands_bucket", le="16.0")
        - moved("timebank_ledger_batch_commands_bucket", le="8.0")
        == 1
    )
