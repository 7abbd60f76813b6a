"""A command that loses a race writes nothing, whichever of its writes PostgreSQL fails on first, and is retried
and decided on fresh state: the constraint that fired never decides whether it was a race."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.exchange import events as ev
from services.exchange import outbox
from services.exchange.commands import JoinByInvitation
from services.exchange.eventstore import StreamConflict
from services.exchange.service import Commands, account_key
from services.exchange.unit import Unit
from services.exchange.vault import Vault
from shared.errors import Conflict

INV = "inv_00000000000000aa"
TOKEN = "join_race"
EMAIL = "sam@example.org"


def details(name: str) -> ev.MemberDetails:
    return ev.MemberDetails(name=name, email=EMAIL, password_hash="not-a-real-hash")


async def invite(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        unit = Unit(conn, Vault(conn))
        created = ev.InvitationCreated(
            at=datetime.now(UTC),
            invitation=INV,
            role="member",
            token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
            expires=datetime.now(UTC) + timedelta(days=1),
        )
        await unit.save(INV, await unit.load(INV), [created])
        await unit.flush()


async def join(unit: Unit, member: str, history: list[ev.AnyEvent] | None = None) -> None:
    """What joining by the invitation writes, decided on ``history`` (read now if not given): used or not, it joins."""
    if history is None:
        history = await unit.load(INV)
    unit.new_stream(member)
    sealed = await unit.vault.seal(member, details(member))
    await unit.save(INV, history, [ev.InvitationUsed(at=datetime.now(UTC), invitation=INV, member=member)])
    await unit.save(member, [], [ev.MemberApplied(at=datetime.now(UTC), member=member, details=sealed, invitation=INV)])
    await unit.enqueue(outbox.OpenLedgerAccount(key=account_key(member), kind="member", member=member))


async def written_by(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, member: str) -> list[str]:
    """Every trace ``member``'s join could have left: events, read-model rows, a data key, an outbox row."""
    found = []
    for what, query in (
        ("events", "SELECT count(*) FROM exchange.events WHERE stream = $1 OR data::text LIKE '%' || $1 || '%'"),
        ("members", "SELECT count(*) FROM exchange.members WHERE id = $1"),
        ("invitations", "SELECT count(*) FROM exchange.invitations WHERE used_by = $1"),
        ("keys", "SELECT count(*) FROM exchange.subject_keys WHERE subject = $1"),
        ("outbox", "SELECT count(*) FROM exchange.outbox WHERE key = 'exchange/' || $1"),
    ):
        if await conn.fetchval(query, member):
            found.append(what)
    return found


async def test_a_loser_that_also_breaks_another_constraint_is_told_it_lost_the_race_and_wrote_nothing(
    exchange_pool: asyncpg.Pool,
) -> None:
    await invite(exchange_pool)
    winner_id, loser_id = "mem_00000000000000a1", "mem_00000000000000b2"
    async with exchange_pool.acquire() as a, exchange_pool.acquire() as b:
        winner, loser = Unit(a, Vault(a)), Unit(b, Vault(b))
        # Both read the invitation unused; the loser's statement would also take the winner's email address.
        await join(winner, winner_id)
        await join(loser, loser_id)
        await winner.flush()
        # PostgreSQL promises no order among a statement's writes: try the loser's in every rotation, so that each
        # of its writes takes its turn at being checked first.
        pending = await loser.writes()
        fired = set()
        for turn in range(len(pending)):
            with pytest.raises(StreamConflict) as lost:
                await loser.send([*pending[turn:], *pending[:turn]])
            cause = lost.value.__cause__
            assert isinstance(cause, asyncpg.IntegrityConstraintViolationError)
            fired.add(cause.constraint_name)
        # It lost on its stream's version and on at least one constraint that has nothing to do with versions.
        assert "events_stream_version_key" in fired
        assert fired - {"events_stream_version_key"}, fired

        assert await written_by(a, winner_id) == ["events", "members", "invitations", "keys", "outbox"]
        assert await written_by(a, loser_id) == []
        assert await a.fetchval("SELECT count(*) FROM exchange.events WHERE stream = $1", INV) == 2


async def test_the_same_write_without_a_race_fails_on_its_own_constraint(exchange_pool: asyncpg.Pool) -> None:
    await invite(exchange_pool)
    async with exchange_pool.acquire() as conn:
        first = Unit(conn, Vault(conn))
        await join(first, "mem_00000000000000a1")
        await first.flush()
        # Read after the first join: no race, so the duplicate email is what the caller hears about.
        second = Unit(conn, Vault(conn))
        await join(second, "mem_00000000000000b2")
        with pytest.raises(asyncpg.UniqueViolationError) as refused:
            await second.flush()
        assert refused.value.constraint_name == "members_email"
        assert await written_by(conn, "mem_00000000000000b2") == []


async def test_a_command_that_lost_a_race_is_retried_and_decided_on_fresh_state(exchange_pool: asyncpg.Pool) -> None:
    await invite(exchange_pool)
    commands = Commands(exchange_pool)
    attempts = 0

    async def work(u: Unit) -> None:
        nonlocal attempts
        attempts += 1
        history = await u.load(INV)
        if any(isinstance(e, ev.InvitationUsed) for e in history):
            raise Conflict("this invitation has already been used")
        if attempts == 1:  # a rival joins between this attempt's read and its write
            async with exchange_pool.acquire() as conn:
                rival = Unit(conn, Vault(conn))
                await join(rival, "mem_00000000000000a1")
                await rival.flush()
        await join(u, "mem_00000000000000b2", history)

    with pytest.raises(Conflict, match="already been used"):
        await commands._tx(work)
    assert attempts == 2
    async with exchange_pool.acquire() as conn:
        assert await written_by(conn, "mem_00000000000000b2") == []
        assert await conn.fetchval("SELECT count(*) FROM exchange.members") == 1


async def test_concurrent_joins_on_one_invitation_admit_one_member_and_tell_the_rest_it_was_used(
    exchange_pool: asyncpg.Pool,
) -> None:
    await invite(exchange_pool)
    commands = Commands(exchange_pool)
    results = await asyncio.gather(
        *(commands.join(JoinByInvitation(token=TOKEN, details=details(f"neighbour {i}"))) for i in range(5)),
        return_exceptions=True,
    )
    joined = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if not isinstance(r, str)]
    assert len(joined) == 1
    assert all(isinstance(r, Conflict) and "already been used" in str(r) for r in refused), refused
    async with exchange_pool.acquire() as conn:
        assert [r["id"] for r in await conn.fetch("SELECT id FROM exchange.members")] == joined
