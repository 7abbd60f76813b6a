"""Waiting for the log to grow: ``GET /log/checkpoints?wait=`` holds an empty answer until a batch is written.

The federation's publisher reads our checkpoints this way, so that a new batch is published as soon as it is signed
instead of at its next poll.
"""

from __future__ import annotations

import asyncio

import httpx

from services.ledger.app import create_app
from shared.note import Signer
from tests.ledger.conftest import Ledger, ledger_settings
from tests.ledger.support import assert_problem
from tests.serving import serving


async def checkpoints(client: httpx.AsyncClient, **params: object) -> list[dict[str, object]]:
    r = await client.get("/log/checkpoints", params=params)
    assert r.status_code == 200, r.text
    found = r.json()["checkpoints"]
    assert isinstance(found, list)
    return found


async def size_now(ledger: Ledger) -> int:
    found = await checkpoints(ledger.client, after=0, limit=1000)
    return int(found[-1]["size"]) if found else 0  # type: ignore[call-overload]


async def test_a_reader_waiting_for_new_checkpoints_gets_the_next_one_as_it_is_signed(
    database_url: str, signer: Signer
) -> None:
    app = create_app(ledger_settings(), database_url=database_url, signer=signer)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        ledger = Ledger(app, client, signer, database_url)  # served for real: requests run side by side
        payer = (await ledger.open_account("payer"))["id"]
        payee = (await ledger.open_account("payee"))["id"]
        size = await size_now(ledger)
        waiting = asyncio.create_task(checkpoints(client, after=size, wait=10))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # nothing new yet: it waits rather than answering "nothing"
        r = await ledger.transfer("while-waiting", str(payer), str(payee), 5)
        assert r.status_code == 201, r.text
        found = await asyncio.wait_for(waiting, 10)
        assert [c["size"] for c in found] == [size + 1]
        latest = (await client.get("/log/checkpoint")).text
        assert latest.startswith(str(found[0]["note"]))


async def test_without_wait_or_with_checkpoints_to_give_the_answer_is_immediate(ledger: Ledger) -> None:
    await ledger.open_account("someone")
    size = await size_now(ledger)
    assert await checkpoints(ledger.client, after=size) == []
    assert [c["size"] for c in await checkpoints(ledger.client, after=size - 1, wait=10)] == [size]


async def test_a_wait_that_runs_out_answers_empty(ledger: Ledger) -> None:
    await ledger.open_account("someone")
    assert await checkpoints(ledger.client, after=await size_now(ledger), wait=0.2) == []


async def test_a_wait_longer_than_allowed_is_a_bad_request(ledger: Ledger) -> None:
    assert_problem(await ledger.client.get("/log/checkpoints", params={"wait": 11}), 400)
    assert_problem(await ledger.client.get("/log/checkpoints", params={"wait": -1}), 400)
