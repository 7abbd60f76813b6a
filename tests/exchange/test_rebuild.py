"""Event sourcing: optimistic concurrency per stream (concurrent changes to one item: no lost update, no double
decision, no server error), and read models that are exactly a replay of the events (`timebank rebuild exchange`).

Concurrent requests go to ``served_exchange`` (real HTTP): the in-process test client handles one request at a time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from services.exchange import projections
from tests.exchange.support import COORDINATOR, Exchange, Member


def rebuild_command(database_url: str) -> subprocess.CompletedProcess[str]:
    """`timebank rebuild exchange`, as an operator runs it against the database."""
    return subprocess.run(
        [sys.executable, "-m", "services.node.cli", "rebuild", "exchange"],
        capture_output=True,
        text=True,
        env={**os.environ, "TIMEBANK_DATABASE__URL": database_url},
        timeout=120,
    )


async def read_models(exchange: Exchange) -> dict[str, list[dict[str, Any]]]:
    """Every row of every read model, in a stable order."""
    async with exchange.db() as conn:
        return {
            table: [dict(r) for r in await conn.fetch(f"SELECT * FROM exchange.{table} ORDER BY 1, 2")]
            for table in projections.READ_MODELS
        }


async def history(exchange: Exchange) -> dict[str, Member]:
    """A network's worth of history: applications, approvals, a rejection, invitations, profile edits, listings
    edited, paused and withdrawn, exchanges completed, declined, cancelled, disputed and resolved, a group
    exchange, payments to a member, to the pot and from it, and an erasure."""
    ada = await exchange.member("Ada", skills=["bikes"], area="Riverside")
    ben = await exchange.member("Ben", area="Riverside")
    cleo = await exchange.member("Cleo")
    dan = await exchange.member("Dan")
    await exchange.apply("Eve")  # still pending
    fay, _ = await exchange.apply("Fay")
    await exchange.call("POST", f"/api/members/{fay}/rejection")
    invited = await exchange.call("POST", "/api/invitations", json={"role": "auditor"})
    await exchange.call("POST", "/api/invitations", json={})  # never used
    joined = {"name": "Gus", "email": "gus@example.org", "password": "gus's long password", "token": invited["token"]}
    assert (await exchange.client.post("/api/invitations/join", json=joined)).status_code == 201
    await exchange.call("PATCH", "/api/me", ada, json={"bio": "Bikes, mostly.", "skills": ["bikes", "gears"]})
    await exchange.call("PUT", f"/api/members/{cleo.id}/role", json={"role": "coordinator"})

    offer = await exchange.publish(ada, "Bike repair", "Brakes, gears.", category="home_repair", area="Riverside")
    await exchange.call("PATCH", f"/api/listings/{offer['id']}", ada, json={"title": "Bike repairs", "shared": True})
    await exchange.call("POST", f"/api/listings/{offer['id']}/pause", ada)
    await exchange.call("POST", f"/api/listings/{offer['id']}/resume", ada)
    request = await exchange.publish(ben, "Lift to the clinic", kind="request", category="transport")
    withdrawn = await exchange.publish(cleo, "Old offer")
    await exchange.call("POST", f"/api/listings/{withdrawn['id']}/withdraw", cleo)

    completed = await exchange.trade(ada, ben, 90, memo="new brake pads")
    declined = (await exchange.call("POST", "/api/exchanges", cleo, json={"listing": request["id"]}))["id"]
    await exchange.call("POST", f"/api/exchanges/{declined}/decline", ben)
    cancelled = await exchange.call("POST", "/api/exchanges", dan, json={"listing": offer["id"], "note": "Sun?"})
    await exchange.call("POST", f"/api/exchanges/{cancelled['id']}/cancel", dan)
    disputed = (await exchange.call("POST", "/api/exchanges", dan, json={"listing": offer["id"]}))["id"]
    await exchange.call("POST", f"/api/exchanges/{disputed}/accept", ada)
    await exchange.call("POST", f"/api/exchanges/{disputed}/record", ada, json={"minutes": 120})
    await exchange.call("POST", f"/api/exchanges/{disputed}/dispute", dan, json={"reason": "it took an hour"})
    await exchange.call("POST", f"/api/exchanges/{disputed}/resolve", json={"minutes": 60})
    group = await exchange.call(
        "POST", "/api/exchanges", ada, json={"providers": [ada.id], "receivers": [ben.id, cleo.id], "note": "class"}
    )
    for receiver in (ben, cleo):
        await exchange.call("POST", f"/api/exchanges/{group['id']}/accept", receiver)
    await exchange.call("POST", f"/api/exchanges/{group['id']}/record", ada, json={"minutes": 61, "memo": "lesson"})
    for receiver in (ben, cleo):
        await exchange.call("POST", f"/api/exchanges/{group['id']}/confirm", receiver)

    await exchange.call("POST", "/api/payments", ben, json={"to": ada.id, "minutes": 15, "memo": "thanks"})
    await exchange.call("POST", "/api/payments", ada, json={"kind": "donation", "minutes": 30})
    await exchange.pot_account()
    await exchange.call("POST", "/api/payments", json={"kind": "grant", "to": dan.id, "minutes": 20})
    for ex in (completed, disputed, group["id"]):
        await exchange.exchange_status(ex, ada, "completed")
    await exchange.outbox_idle()
    await exchange.call("POST", f"/api/members/{dan.id}/erasure", dan)
    return {"ada": ada, "ben": ben, "cleo": cleo, "dan": dan}


async def test_rebuilding_replays_every_stream_into_read_models_equal_to_the_live_ones(exchange: Exchange) -> None:
    await history(exchange)
    live = await read_models(exchange)
    assert all(live[table] for table in projections.READ_MODELS)  # every read model has something to compare
    async with exchange.db() as conn:
        streams = await conn.fetchval("SELECT count(DISTINCT stream) FROM exchange.events")
        async with conn.transaction():
            assert await projections.rebuild(conn) == streams
    assert await read_models(exchange) == live


async def test_the_rebuild_command_remakes_the_read_models_of_a_database(exchange: Exchange) -> None:
    members = await history(exchange)
    live = await read_models(exchange)
    async with exchange.db() as conn:
        streams = await conn.fetchval("SELECT count(DISTINCT stream) FROM exchange.events")
        # Damage the read models, as a bad migration or a hand-edit might.
        await conn.execute("DELETE FROM exchange.listings")
        await conn.execute("UPDATE exchange.members SET name = 'someone else', status = 'pending'")

    done = await asyncio.to_thread(rebuild_command, exchange.database_url)
    assert done.returncode == 0, done.stderr
    assert f"replayed {streams} streams" in done.stdout
    assert await read_models(exchange) == live
    found = await exchange.call("GET", "/api/listings?q=bike", members["ben"])
    assert [item["title"] for item in found["items"]] == ["Bike repairs"]


def test_the_rebuild_command_on_a_database_without_the_schema_says_to_migrate(database_url: str) -> None:
    done = rebuild_command(database_url)
    assert done.returncode != 0
    assert "timebank migrate" in done.stderr


async def test_one_member_accepting_an_exchange_many_times_at_once_accepts_it_once(served_exchange: Exchange) -> None:
    exchange = served_exchange
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = await exchange.publish(ada, "Bike repair")
    ex = (await exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"]}))["id"]

    answers = await asyncio.gather(
        *[exchange.client.post(f"/api/exchanges/{ex}/accept", headers=ada.headers) for _ in range(10)]
    )
    assert sorted(r.status_code for r in answers) == [200] + [409] * 9
    async with exchange.db() as conn:
        types = await conn.fetch("SELECT type FROM exchange.events WHERE stream = $1 ORDER BY version", ex)
    assert [r["type"] for r in types] == ["exchange.exchange.proposed.v1", "exchange.exchange.accepted.v1"]
    assert (await exchange.call("GET", f"/api/exchanges/{ex}", ben))["status"] == "accepted"


async def test_every_receiver_accepting_a_group_exchange_at_once_is_kept(served_exchange: Exchange) -> None:
    exchange = served_exchange
    ada = await exchange.member("Ada")
    receivers = [await exchange.member(name) for name in ("Ben", "Cleo", "Dan", "Eve")]
    body = {"providers": [ada.id], "receivers": [r.id for r in receivers]}
    ex = (await exchange.call("POST", "/api/exchanges", ada, json=body))["id"]

    answers = await asyncio.gather(
        *[exchange.client.post(f"/api/exchanges/{ex}/accept", headers=r.headers) for r in receivers]
    )
    assert [r.status_code for r in answers] == [200] * len(receivers)
    seen = await exchange.call("GET", f"/api/exchanges/{ex}", ada)
    assert seen["status"] == "accepted"
    assert {p["member"]: p["answer"] for p in seen["parties"]} == {
        ada.id: "proposer",
        **{r.id: "accepted" for r in receivers},
    }
    async with exchange.db() as conn:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM exchange.events WHERE stream = $1", ex)]
    assert sorted(versions) == list(range(1, len(receivers) + 2))


async def test_concurrent_edits_of_a_listing_are_all_applied_in_one_order(served_exchange: Exchange) -> None:
    exchange = served_exchange
    ada = await exchange.member("Ada")
    listing = (await exchange.publish(ada, "Bike repair"))["id"]
    titles = [f"Bike repair, take {n}" for n in range(8)]

    answers = await asyncio.gather(
        *[
            exchange.client.patch(f"/api/listings/{listing}", json={"title": title}, headers=ada.headers)
            for title in titles
        ]
    )
    assert [r.status_code for r in answers] == [200] * len(titles), [r.text for r in answers]
    async with exchange.db() as conn:
        rows = await conn.fetch("SELECT version, type FROM exchange.events WHERE stream = $1 ORDER BY version", listing)
    assert [r["version"] for r in rows] == list(range(1, len(titles) + 2))
    assert [r["type"] for r in rows].count("exchange.listing.edited.v1") == len(titles)
    # The read model shows the edit that came last in the stream, as a replay would.
    shown = (await exchange.call("GET", f"/api/listings/{listing}", ada))["title"]
    live = await read_models(exchange)
    async with exchange.db() as conn, conn.transaction():
        await projections.rebuild(conn)
    assert await read_models(exchange) == live
    assert shown in titles


async def test_a_receiver_confirming_many_times_at_once_is_paid_for_once(served_exchange: Exchange) -> None:
    exchange = served_exchange
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = await exchange.publish(ada, "Bike repair")
    ex = (await exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"]}))["id"]
    await exchange.call("POST", f"/api/exchanges/{ex}/accept", ada)
    await exchange.call("POST", f"/api/exchanges/{ex}/record", ada, json={"minutes": 45})

    answers = await asyncio.gather(
        *[exchange.client.post(f"/api/exchanges/{ex}/confirm", headers=ben.headers) for _ in range(8)]
    )
    assert sorted(r.status_code for r in answers) == [200] + [409] * 7
    await exchange.exchange_status(ex, ben, "completed")
    assert ben.account is not None
    assert [line["delta"] for line in await exchange.ledger_lines(ben.account)] == [-45]


async def test_a_coordinator_and_the_member_changing_one_member_at_once_both_count(served_exchange: Exchange) -> None:
    exchange = served_exchange
    ada = await exchange.member("Ada")
    answers = await asyncio.gather(
        exchange.client.patch("/api/me", json={"bio": "Bikes."}, headers=ada.headers),
        exchange.client.put(f"/api/members/{ada.id}/role", json={"role": "coordinator"}, headers=COORDINATOR),
        exchange.client.patch("/api/me", json={"area": "Riverside"}, headers=ada.headers),
    )
    assert [r.status_code for r in answers] == [200, 200, 200]
    me = await exchange.call("GET", "/api/me", ada)
    assert (me["bio"], me["area"], me["role"]) == ("Bikes.", "Riverside", "coordinator")
