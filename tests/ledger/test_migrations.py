"""The ledger's schema: migrations apply to an empty database, once, and every named query fits the schema."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from services.ledger import store
from services.ledger.batch import (
    AcceptanceRow,
    ChangedAccountRow,
    DecisionRow,
    InFlightRow,
    NewAccountRow,
    TransferRow,
)
from shared.db import load_queries, migrate

QUERIES = load_queries(Path(store.__file__).with_name("queries.sql"))
STORE_SOURCE = Path(store.__file__).read_text()
LEDGER_TABLES = {
    "head",
    "entries",
    "accounts",
    "transfers",
    "tiles",
    "checkpoints",
    "crossnet",
    "crossnet_accepted",
    "in_flight",
}


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ledger'")
    return {r["table_name"] for r in rows}


async def schema_snapshot(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        """SELECT table_name, column_name, data_type FROM information_schema.columns
           WHERE table_schema = 'ledger' ORDER BY table_name, ordinal_position"""
    )
    return [(r["table_name"], r["column_name"], r["data_type"]) for r in rows]


def migration_names() -> list[str]:
    return sorted(p.name for p in store.MIGRATIONS.glob("*.sql") if re.match(r"^\d{4}_", p.name))


async def test_migrations_apply_to_an_empty_database(conn: asyncpg.Connection) -> None:
    assert await tables(conn) == set()
    applied = await migrate(conn, "ledger", store.MIGRATIONS)
    assert applied == migration_names()
    assert applied
    assert await tables(conn) >= LEDGER_TABLES
    head = await conn.fetchrow("SELECT size, root FROM ledger.head")
    assert head is not None
    assert (head["size"], bytes(head["root"])) == (
        0,
        bytes.fromhex(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # SHA-256 of nothing: the empty tree
        ),
    )
    recorded = await conn.fetch("SELECT name FROM public.timebank_migrations WHERE service = 'ledger' ORDER BY version")
    assert [r["name"] for r in recorded] == applied


async def test_applying_migrations_twice_changes_nothing(conn: asyncpg.Connection) -> None:
    await migrate(conn, "ledger", store.MIGRATIONS)
    schema = await schema_snapshot(conn)
    assert schema
    assert await migrate(conn, "ledger", store.MIGRATIONS) == []
    assert await schema_snapshot(conn) == schema
    assert await conn.fetchval("SELECT count(*) FROM ledger.head") == 1
    assert await conn.fetchval("SELECT count(*) FROM public.timebank_migrations") == len(migration_names())


async def test_concurrent_migration_runners_apply_each_migration_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate(c, "ledger", store.MIGRATIONS) for c in conns))
        assert sorted(name for applied in results for name in applied) == migration_names()
        assert await conns[0].fetchval("SELECT count(*) FROM ledger.head") == 1
    finally:
        for c in conns:
            await c.close()


def test_queries_file_defines_the_queries_the_store_uses() -> None:
    used = set(re.findall(r'Q\["([a-z_]+)"\]', STORE_SOURCE))
    assert used
    assert used <= set(QUERIES), used - set(QUERIES)


def test_store_and_the_writer_hold_no_inline_sql() -> None:
    writer = {name: Path(store.__file__).with_name(name).read_text() for name in ("appender.py", "committer.py")}
    for name, source in (("store.py", STORE_SOURCE), *writer.items()):
        inline = re.findall(r"\.(?:execute|executemany|fetch|fetchrow|fetchval|prepare)\(\s*[rbf]?[\"']", source)
        assert inline == [], f"{name} runs SQL that is not a named query"


def _columns(sql: str, pattern: str) -> list[str]:
    match = re.search(pattern, sql)
    assert match is not None, pattern
    return [c.strip() for c in match.group(1).split(",")]


@pytest.mark.parametrize(
    ("query", "pattern", "row_type"),
    [
        ("write_batch", r"INSERT INTO ledger\.accounts \(([^)]*)\)", NewAccountRow),
        ("write_batch", r"unnest\([^)]*\) AS c \(([^)]*)\)", ChangedAccountRow),
        ("write_batch", r"INSERT INTO ledger\.transfers \(([^)]*)\)", TransferRow),
        ("write_batch", r"INSERT INTO ledger\.crossnet \(([^)]*)\)", DecisionRow),
        ("write_batch", r"INSERT INTO ledger\.crossnet_accepted \(([^)]*)\)", AcceptanceRow),
        ("write_batch", r"INSERT INTO ledger\.in_flight \(([^)]*)\)", InFlightRow),
        ("write_transfers", r"INSERT INTO ledger\.transfers \(([^)]*)\)", TransferRow),
    ],
)
def test_each_written_row_names_the_columns_of_its_statement_in_order(
    query: str, pattern: str, row_type: type[msgspec.Struct]
) -> None:
    # The rows are sent as one array per field, in field order: the fields must be the statement's columns.
    assert list(row_type.__struct_fields__) == _columns(QUERIES[query], pattern)


@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_named_query_prepares_against_the_migrated_schema(conn: asyncpg.Connection, name: str) -> None:
    await migrate(conn, "ledger", store.MIGRATIONS)
    # A query may be a short script run with the simple protocol (e.g. "BEGIN; SELECT ... FOR UPDATE"):
    # each of its statements must prepare on its own.
    statements = [s for s in (part.strip() for part in QUERIES[name].split(";")) if s]
    assert statements
    for statement in statements:
        if statement.upper() in ("BEGIN", "COMMIT", "ROLLBACK"):
            continue
        prepared = await conn.prepare(statement)
        placeholders = {int(n) for n in re.findall(r"\$(\d+)", statement)}
        assert len(prepared.get_parameters()) == max(placeholders, default=0)


async def test_upgrade_moves_posting_balances_onto_the_transfers(conn: asyncpg.Connection, tmp_path: Path) -> None:
    # A ledger written before 0003: two transfers between alice and bob, each with its two posting rows.
    before = tmp_path / "migrations"
    before.mkdir()
    for name in ("0001_ledger.sql", "0002_crossnet.sql"):
        (before / name).write_text((store.MIGRATIONS / name).read_text())
    await migrate(conn, "ledger", before)
    await conn.execute(
        """INSERT INTO ledger.accounts (id, kind, floor, ceiling, opened_idx, open_key, open_fingerprint)
           VALUES ('acct_alice', 'member', -600, NULL, 0, 'a', '\\x01'),
                  ('acct_bob', 'member', -600, NULL, 1, 'b', '\\x02');
           INSERT INTO ledger.transfers (id, idx, fingerprint, payer, payee, minutes, reverses)
           VALUES ('tr_1', 2, '\\x03', 'acct_alice', 'acct_bob', 30, NULL),
                  ('tr_2', 3, '\\x04', 'acct_bob', 'acct_alice', 10, 'tr_1');
           INSERT INTO ledger.postings (account, idx, delta, balance, transfer, counterparty)
           VALUES ('acct_alice', 2, -30, -30, 'tr_1', 'acct_bob'), ('acct_bob', 2, 30, 30, 'tr_1', 'acct_alice'),
                  ('acct_bob', 3, -10, 20, 'tr_2', 'acct_alice'), ('acct_alice', 3, 10, -20, 'tr_2', 'acct_bob');
           INSERT INTO ledger.entries (idx, data) SELECT i, '{}'::bytea FROM generate_series(0, 3) AS i;"""
    )

    assert await migrate(conn, "ledger", store.MIGRATIONS) == migration_names()[2:]

    assert "postings" not in await tables(conn)
    rows = await conn.fetch("SELECT id, payer_balance, payee_balance, reverses FROM ledger.transfers ORDER BY idx")
    assert [tuple(r) for r in rows] == [("tr_1", -30, 30, None), ("tr_2", 20, -20, "tr_1")]
    balance = "SELECT ledger.balance_before($1, $2)"
    assert [await conn.fetchval(balance, "acct_alice", size) for size in (2, 3, 4)] == [0, -30, -20]
    assert [await conn.fetchval(balance, "acct_bob", size) for size in (2, 3, 4)] == [0, 30, 20]
    statement = await conn.fetch(QUERIES["statement"], "acct_alice", 10, 50)
    assert [(r["idx"], r["delta"], r["balance"], r["counterparty"]) for r in statement] == [
        (3, 10, -20, "acct_bob"),
        (2, -30, -30, "acct_bob"),
    ]
    # The moved rows stay append-only.
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute("UPDATE ledger.transfers SET minutes = 1")


async def test_upgrade_counts_every_payment_out_not_reversed_as_in_flight(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Before 0005 no acceptance was recorded: each unreversed payment out starts in flight (the federation then
    sends the acceptances it has already read, which settle them)."""
    before = tmp_path / "migrations"
    before.mkdir()
    for name in migration_names()[:4]:
        (before / name).write_text((store.MIGRATIONS / name).read_text())
    await migrate(conn, "ledger", before)
    await conn.execute(
        """INSERT INTO ledger.accounts (id, kind, floor, ceiling, peer, opened_idx, open_key, open_fingerprint)
           VALUES ('acct_alice', 'member', -600, NULL, NULL, 0, 'a', '\\x01'),
                  ('acct_peer', 'peer', -300, NULL, 'timebank.test/b', 1, 'p', '\\x02');
           INSERT INTO ledger.transfers (id, idx, fingerprint, payer, payee, minutes, reverses, payer_balance,
                                         payee_balance)
           VALUES ('tr_1', 2, '\\x03', 'acct_alice', 'acct_peer', 30, NULL, -30, 30),
                  ('tr_2', 3, '\\x04', 'acct_alice', 'acct_peer', 20, NULL, -50, 50),
                  ('tr_3', 4, '\\x05', 'acct_peer', 'acct_alice', 20, 'tr_2', 30, -30);
           UPDATE ledger.head SET size = 5;"""
    )
    assert await migrate(conn, "ledger", store.MIGRATIONS) == migration_names()[4:]
    accounts = await conn.fetch(QUERIES["accounts_by_id"], ["acct_alice", "acct_peer"])
    assert {r["id"]: (r["balance"], r["in_flight"]) for r in accounts} == {
        "acct_alice": (-30, 0),
        "acct_peer": (30, 30),
    }
