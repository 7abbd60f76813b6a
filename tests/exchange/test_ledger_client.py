"""The exchange's ledger client against a real ledger: idempotent commands, refusals, outages, paged reads."""

from __future__ import annotations

import asyncio

import pytest

from services.exchange.ledger_client import LedgerClient, LedgerRefused, LedgerUnavailable
from services.node.processes import free_port
from tests.ledger.conftest import TOKENS


async def test_opening_an_account_twice_with_one_key_answers_with_the_same_account(
    ledger_client: LedgerClient, unique: str
) -> None:
    first = await ledger_client.open_account(f"{unique}-member-1")
    again = await ledger_client.open_account(f"{unique}-member-1")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.account == first.account
    assert again.index == first.index
    assert again.owner_token == first.owner_token
    assert (first.kind, first.floor, first.ceiling) == ("member", -600, None)
    view = await ledger_client.account(first.account)
    assert (view.id, view.balance, view.floor, view.closed, view.opened_index) == (
        first.account,
        0,
        -600,
        False,
        first.index,
    )


async def test_a_community_pot_opens_with_a_zero_floor_and_the_limits_asked_for(
    ledger_client: LedgerClient, unique: str
) -> None:
    pot = await ledger_client.open_account(f"{unique}-pot", kind="community")
    capped = await ledger_client.open_account(f"{unique}-capped", floor=-120, ceiling=300)

    assert (pot.kind, pot.floor) == ("community", 0)
    assert (capped.floor, capped.ceiling) == (-120, 300)


async def test_a_transfer_key_posts_once_and_a_repeat_answers_with_the_original(
    ledger_client: LedgerClient, unique: str
) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    digest = "ab" * 32

    first = await ledger_client.transfer(f"{unique}-ex", payer, payee, 90, memo_digest=digest, exchange_ref="ex_1")
    again = await ledger_client.transfer(f"{unique}-ex", payer, payee, 90, memo_digest=digest, exchange_ref="ex_1")

    assert (first.replayed, again.replayed) == (False, True)
    assert (again.id, again.index, again.at) == (first.id, first.index, first.at)
    assert (first.payer, first.payee, first.minutes, first.memo_digest, first.exchange_ref) == (
        payer,
        payee,
        90,
        digest,
        "ex_1",
    )
    lines = [line async for line in ledger_client.statement_lines(payer)]
    assert [(line.transfer, line.delta, line.counterparty, line.memo_digest) for line in lines] == [
        (first.id, -90, payee, digest)
    ]
    assert (await ledger_client.account(payee)).balance == 90


async def test_refusals_carry_the_ledgers_problem_document(ledger_client: LedgerClient, unique: str) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account

    with pytest.raises(LedgerRefused) as beyond_floor:
        await ledger_client.transfer(f"{unique}-big", payer, payee, 601)
    assert (beyond_floor.value.status, beyond_floor.value.slug) == (409, "insufficient-hours")
    assert beyond_floor.value.problem["extra"] == {"account": payer, "balance": 0, "floor": -600}

    await ledger_client.transfer(f"{unique}-t", payer, payee, 30)
    with pytest.raises(LedgerRefused) as reused_key:
        await ledger_client.transfer(f"{unique}-t", payer, payee, 31)
    assert (reused_key.value.status, reused_key.value.slug) == (409, "conflict")

    with pytest.raises(LedgerRefused) as unknown:
        await ledger_client.transfer(f"{unique}-u", payer, "acct_" + "0" * 20, 5)
    assert (unknown.value.status, unknown.value.slug) == (404, "not-found")

    with pytest.raises(LedgerRefused) as invalid:
        await ledger_client.transfer(f"{unique}-v", payer, payee, 0)
    assert invalid.value.status == 400
    # Nothing refused reached the payer's statement.
    assert [line.delta async for line in ledger_client.statement_lines(payer)] == [-30]


async def test_a_wrong_service_token_is_refused_as_unauthorized(ledger_url: str, unique: str) -> None:
    async with LedgerClient(ledger_url, "not-the-token") as client:
        with pytest.raises(LedgerRefused) as refused:
            await client.open_account(f"{unique}-m")
    assert (refused.value.status, refused.value.slug) == (401, "unauthorized")


async def test_a_ledger_nobody_listens_for_is_unavailable() -> None:
    async with LedgerClient(f"http://127.0.0.1:{free_port()}", TOKENS["service"]) as client:
        with pytest.raises(LedgerUnavailable):
            await client.transfer("k", "acct_" + "1" * 20, "acct_" + "2" * 20, 5)


async def test_a_ledger_that_never_answers_is_unavailable_after_the_timeout() -> None:
    accepted = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with LedgerClient(f"http://127.0.0.1:{port}", TOKENS["service"], timeout=0.3) as client:
            with pytest.raises(LedgerUnavailable, match="Timeout"):
                await client.ready()
        assert accepted.is_set()
    finally:
        server.close()
        await server.wait_closed()


async def test_statements_are_read_page_by_page_as_the_ledger_pages_them(
    ledger_client: LedgerClient, unique: str
) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    posted = [await ledger_client.transfer(f"{unique}-{i}", payer, payee, 10 + i) for i in range(5)]

    first = await ledger_client.statement(payer, limit=2)
    second = await ledger_client.statement(payer, limit=2, before=first.next_before)
    last = await ledger_client.statement(payer, limit=2, before=second.next_before)

    newest_first = [t.id for t in reversed(posted)]
    assert [line.transfer for line in first.lines + second.lines + last.lines] == newest_first
    assert last.next_before is None
    assert [line.balance for line in first.lines] == [-60, -46]
    assert [line.transfer async for line in ledger_client.statement_lines(payer, page_size=2)] == newest_first


async def test_ready_reports_the_log_size(ledger_client: LedgerClient, unique: str) -> None:
    before = (await ledger_client.ready()).log_size
    await ledger_client.open_account(f"{unique}-m")
    status = await ledger_client.ready()
    assert status.status == "ready"
    assert status.log_size >= before + 1
