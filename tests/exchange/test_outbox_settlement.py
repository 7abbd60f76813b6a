"""Durable settlement: a confirmed exchange becomes exactly one ledger transfer, keyed by the exchange id, even when
the ledger is down at confirmation or the exchange restarts (or dies after the ledger committed) before it settles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

import tests.ledger.processes
from services.exchange import outbox
from services.exchange.app import create_app
from services.ledger.client import LedgerClient
from services.node.processes import free_port
from shared.note import Signer, write_signer_key
from tests.exchange.support import Exchange, Member, exchange_settings
from tests.ledger.conftest import ORIGIN
from tests.ledger.processes import serve


@asynccontextmanager
async def exchange_app(database_url: str, ledger_url: str) -> AsyncIterator[Exchange]:
    """One run of the exchange app (a process's life, as far as the database is concerned)."""
    app = create_app(exchange_settings(), database_url=database_url, ledger_url=ledger_url)
    async with AsyncTestClient(app=app) as client:
        yield Exchange(app, client, database_url)


async def recorded_exchange(exchange: Exchange, provider: Member, receiver: Member, minutes: int) -> str:
    """An accepted exchange on the provider's offer with the provider's time recorded, awaiting confirmation."""
    listing = await exchange.publish(provider, "Bike repair")
    ex: str = (await exchange.call("POST", "/api/exchanges", receiver, json={"listing": listing["id"]}))["id"]
    await exchange.call("POST", f"/api/exchanges/{ex}/accept", provider)
    await exchange.call("POST", f"/api/exchanges/{ex}/record", provider, json={"minutes": minutes, "memo": "brakes"})
    return ex


async def outbox_entry(exchange: Exchange, key: str) -> outbox.OutboxEntry:
    async with exchange.db() as conn:
        found = await outbox.entry(conn, key)
    assert found is not None, f"nothing in the outbox under {key}"
    return found


async def confirm_without_settling(exchange: Exchange, ex: str, receiver: Member) -> None:
    """The receiver confirms; the exchange shows it, and the transfer waits in the outbox under the exchange id."""
    confirmed = await exchange.call("POST", f"/api/exchanges/{ex}/confirm", receiver)
    assert confirmed["status"] == "confirmed"
    assert confirmed["lines"][0]["transfer"] is None
    waiting = await exchange.until(
        lambda: outbox_entry(exchange, ex), lambda row: row.attempts >= 1, "a first attempt to reach the ledger"
    )
    assert waiting.done_at is None
    assert isinstance(waiting.command, outbox.PostTransfer)
    assert (waiting.command.key, waiting.command.exchange_ref, waiting.command.minutes) == (ex, ex, 60)
    assert (await exchange.call("GET", "/ready"))["outbox_pending"] >= 1
    assert (await exchange.call("GET", f"/api/exchanges/{ex}", receiver))["status"] == "confirmed"


async def test_a_confirmation_while_the_ledger_is_down_settles_once_when_it_returns(
    database_url: str, server_tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger runs at a fixed address, so it can be stopped and brought back where the exchange expects it.
    port = free_port()
    monkeypatch.setattr(tests.ledger.processes, "free_port", lambda: port)
    key_file = server_tmp_path / "network.key"
    write_signer_key(key_file, Signer.generate(ORIGIN))

    with serve(server_tmp_path, database_url, key_file) as ledger_url:
        async with exchange_app(database_url, ledger_url) as exchange:
            ada = await exchange.member("Ada")
            ben = await exchange.member("Ben")
            ex = await recorded_exchange(exchange, ada, ben, 60)
    async with exchange_app(database_url, ledger_url) as exchange:
        await confirm_without_settling(exchange, ex, ben)
        waiting = await exchange.until(
            lambda: outbox_entry(exchange, ex), lambda row: row.attempts >= 2, "a second attempt"
        )
        assert waiting.last_error is not None
        assert "ConnectError" in waiting.last_error

        with serve(server_tmp_path, database_url, key_file):
            done = await exchange.exchange_status(ex, ben, "completed", patience=40)
            [transfer] = await exchange.ledger_transfers(ex)
            assert (await exchange.balance(ada), await exchange.balance(ben)) == (60, -60)

    assert (transfer["id"], transfer["minutes"]) == (done["lines"][0]["transfer"], 60)


async def test_an_exchange_restarted_between_confirmation_and_settlement_settles_once(
    database_url: str, ledger_url: str
) -> None:
    async with exchange_app(database_url, ledger_url) as exchange:
        ada = await exchange.member("Ada")
        ben = await exchange.member("Ben")
        ex = await recorded_exchange(exchange, ada, ben, 60)
    # This run cannot reach the ledger (nothing listens there), and ends before the transfer is sent.
    async with exchange_app(database_url, f"http://127.0.0.1:{free_port()}") as exchange:
        await confirm_without_settling(exchange, ex, ben)

    async with exchange_app(database_url, ledger_url) as exchange:
        done = await exchange.exchange_status(ex, ben, "completed")
        [transfer] = await exchange.ledger_transfers(ex)
        assert (await exchange.balance(ada), await exchange.balance(ben)) == (60, -60)
        row = await outbox_entry(exchange, ex)

    assert transfer["id"] == done["lines"][0]["transfer"]
    assert isinstance(row.outcome, outbox.Delivered)
    assert row.outcome.result.replayed is False


async def test_a_transfer_the_ledger_posted_just_before_the_exchange_died_is_not_posted_again(
    database_url: str, ledger_url: str, ledger_client: LedgerClient
) -> None:
    async with exchange_app(database_url, ledger_url) as exchange:
        ada = await exchange.member("Ada")
        ben = await exchange.member("Ben")
        ex = await recorded_exchange(exchange, ada, ben, 60)
    async with exchange_app(database_url, f"http://127.0.0.1:{free_port()}") as exchange:
        await confirm_without_settling(exchange, ex, ben)
        command = (await outbox_entry(exchange, ex)).command
    # What a worker that died after the ledger committed, and before the exchange recorded it, left behind.
    assert isinstance(command, outbox.PostTransfer)
    first = await ledger_client.transfer(
        command.key,
        command.payer,
        command.payee,
        command.minutes,
        memo_digest=command.memo_digest,
        exchange_ref=command.exchange_ref,
    )

    async with exchange_app(database_url, ledger_url) as exchange:
        done = await exchange.exchange_status(ex, ben, "completed")
        transfers = await exchange.ledger_transfers(ex)
        assert (await exchange.balance(ada), await exchange.balance(ben)) == (60, -60)
        row = await outbox_entry(exchange, ex)

    assert [t["id"] for t in transfers] == [first.id]
    assert (done["lines"][0]["transfer"], done["lines"][0]["ledger_index"]) == (first.id, first.index)
    assert isinstance(row.outcome, outbox.Delivered)
    assert row.outcome.result.replayed is True
