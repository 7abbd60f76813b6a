"""A command's writes (events, read models, data keys, outbox rows) go out as one statement: all or nothing, and a
writer that lost the race for a stream's next version writes nothing at all."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from services.exchange import events as ev
from services.exchange import eventstore, neighbour_offers, outbox, projections, store, vault
from services.exchange.eventstore import StreamConflict
from services.exchange.unit import Unit
from services.exchange.vault import Vault
from services.exchange.writes import Write, compose

EX = "ex_00000000000000aa"
_BROKEN_ROW = "INSERT INTO exchange.outbox (key, kind, payload, done_at) VALUES ('x', 'y', '', now())"


def proposed(note: ev.Sealed | None = None) -> ev.ExchangeProposed:
    return ev.ExchangeProposed(
        at=datetime.now(UTC),
        exchange=EX,
        proposer="mem_00000000000000a1",
        providers=["mem_00000000000000a1"],
        receivers=["mem_00000000000000b2"],
        listing=None,
        category="other",
        note=note,
    )


def settle(key: str) -> outbox.PostTransfer:
    return outbox.PostTransfer(key=key, stream=EX, payer="acct_x", payee="acct_y", minutes=5)


async def test_every_named_query_fits_the_migrated_schema(exchange_pool: asyncpg.Pool) -> None:
    queries = {
        **{f"store.{name}": q for name, q in store.Q.items()},
        **{f"projections.{name}": q for name, q in projections.Q.items()},
        **{f"eventstore.{name}": q for name, q in eventstore.Q.items()},
        **{f"vault.{name}": q for name, q in vault.Q.items()},
        **{f"neighbour_offers.{name}": q for name, q in neighbour_offers.Q.items()},
    }
    async with exchange_pool.acquire() as conn:
        for name, query in queries.items():
            assert await conn.prepare(query) is not None, name


async def test_a_command_that_lost_the_race_for_a_stream_writes_nothing(exchange_pool: asyncpg.Pool) -> None:
    async with exchange_pool.acquire() as conn:
        first = Unit(conn, Vault(conn))
        first.new_stream(EX)
        note = await first.vault.seal(EX, ev.Note(text="Sunday?"))
        await first.save(EX, [], [proposed(note)])
        await first.flush()
        assert first.views[EX].note == "Sunday?"

    async with exchange_pool.acquire() as a, exchange_pool.acquire() as b:
        winner, loser = Unit(a, Vault(a)), Unit(b, Vault(b))
        for unit, event, key in (
            (winner, ev.ExchangeAccepted(at=datetime.now(UTC), exchange=EX, by="mem_00000000000000b2"), "won"),
            (loser, ev.ExchangeDeclined(at=datetime.now(UTC), exchange=EX, by="mem_00000000000000b2"), "lost"),
        ):
            history = await unit.load(EX)
            await unit.save(EX, history, [event])
            await unit.enqueue(settle(key))
        await winner.flush()
        with pytest.raises(StreamConflict):
            await loser.flush()

        assert await a.fetchval("SELECT count(*) FROM exchange.events WHERE stream = $1", EX) == 2
        assert [r["key"] for r in await a.fetch("SELECT key FROM exchange.outbox")] == ["won"]
        assert await a.fetchval("SELECT status FROM exchange.exchanges WHERE id = $1", EX) == "accepted"
        answers = await a.fetch("SELECT answer FROM exchange.exchange_parties WHERE exchange = $1 ORDER BY 1", EX)
        assert [r["answer"] for r in answers] == ["accepted", "proposer"]


async def test_a_write_that_fails_leaves_the_events_unwritten_too(exchange_pool: asyncpg.Pool) -> None:
    async with exchange_pool.acquire() as conn:
        unit = Unit(conn, Vault(conn))
        unit.new_stream(EX)
        await unit.save(EX, [], [proposed()])
        await unit.enqueue(settle("k"))
        with pytest.raises(asyncpg.CheckViolationError):
            await unit.flush(
                [Write("INSERT INTO exchange.outbox (key, kind, payload, done_at) VALUES ('x', 'y', '', now())", ())]
            )
        assert await conn.fetchval("SELECT count(*) FROM exchange.events") == 0
        assert await conn.fetchval("SELECT count(*) FROM exchange.exchanges") == 0
        assert await conn.fetchval("SELECT count(*) FROM exchange.outbox") == 0


def test_composed_writes_number_their_arguments_in_turn_and_merge_rows_of_one_statement() -> None:
    a = Write("INSERT INTO t (x) SELECT * FROM unnest($1::int[])", ([1],), rows=True)
    b = Write("INSERT INTO u (y, z) VALUES ($1, $2)", ("y", "z"))
    c = Write("INSERT INTO t (x) SELECT * FROM unnest($1::int[])", ([2, 3],), rows=True)
    composed = compose([a, b, c])
    assert composed.args == ([1, 2, 3], "y", "z")
    assert composed.sql == (
        "WITH w0 AS (\nINSERT INTO t (x) SELECT * FROM unnest($1::int[])\n)\nINSERT INTO u (y, z) VALUES ($2, $3)"
    )
    assert compose([b]) == b


def test_a_rebuild_empties_every_read_model() -> None:
    truncated = projections.Q["truncate_read_models"].split("\n", 1)[1].removeprefix("TRUNCATE").split(",")
    # Listings lose our own rows only: neighbours' offers among them are not projected from our events.
    assert projections.Q["clear_own_listings"].endswith("DELETE FROM exchange.listings WHERE network IS NULL")
    emptied = [*(t.strip().removeprefix("exchange.") for t in truncated), "listings"]
    assert sorted(emptied) == sorted(projections.READ_MODELS)


def test_rows_held_in_parallel_arrays_come_out_by_name_and_must_line_up() -> None:
    row = {"members": ["mem_a", "mem_b"], "sides": ["provider", "receiver"], "answers": ["proposer", None]}
    columns = {"member": "members", "side": "sides", "answer": "answers"}
    assert store.unzip(row, columns) == [
        {"member": "mem_a", "side": "provider", "answer": "proposer"},
        {"member": "mem_b", "side": "receiver", "answer": None},
    ]
    with pytest.raises(ValueError, match="unequal length"):
        store.unzip({**row, "answers": [None]}, columns)
