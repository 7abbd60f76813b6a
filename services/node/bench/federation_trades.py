"""The cross-network part of ``timebank bench federation``: payments by 64 concurrent payers from riverside to
hillside's members, timed from the payer's commit until hillside's decision is in riverside's copy of hillside's log,
hop by hop; and how long a new checkpoint waits for its cosignature."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg
import httpx
import msgspec

from services.node.bench.loadgen import LoadClient
from services.node.bench.networks import PAYERS, TOKENS, Network, status, until
from services.node.processes import LOCALHOST


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:,.0f} ms"


async def trades(river: Network, hill: Network, count: int) -> tuple[float, list[float], Hops, float]:
    """``count`` payments by PAYERS concurrent payers in riverside to members of hillside; the seconds from the
    first commit until riverside's copy of hillside's log holds every decision, each payment's latency and where it
    went, and (measured first) the rate of as many local payments by the same payers."""
    headers = f"Authorization: Bearer {TOKENS['service']}\r\nContent-Type: application/json\r\n".encode()
    coordinator = {"Authorization": f"Bearer {TOKENS['coordinator']}"}
    async with (
        httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp,
        httpx.AsyncClient(base_url=hill.url, timeout=30) as hhttp,
    ):
        payers = [
            (await rhttp.post("/ledger/accounts", json={"key": f"payer-{i}"}, headers=coordinator)).json()["id"]
            for i in range(PAYERS)
        ]
        payees = [
            (await hhttp.post("/ledger/accounts", json={"key": f"payee-{i}"}, headers=coordinator)).json()["id"]
            for i in range(PAYERS)
        ]
        clearing_found: list[str] = []

        async def linked() -> bool:
            peers = (await status(rhttp))["peers"]
            assert isinstance(peers, list)
            clearing_found[:] = [p["clearing_account"] for p in peers if p["clearing_account"]]
            return bool(clearing_found)

        await until(linked, "riverside links hillside")
        clearing = clearing_found[0]
    committed: dict[str, float] = {}
    per_payer = count // PAYERS

    async def pay(i: int, remote: bool) -> None:
        client = LoadClient(LOCALHOST, river.port)
        try:
            for n in range(per_payer):
                if remote:
                    body = {"key": f"trade-{i}-{n}", "payer": payers[i], "payee": clearing, "minutes": 1,
                            "remote_payee": payees[(i + n) % PAYERS]}  # fmt: skip
                else:
                    body = {
                        "key": f"local-{i}-{n}",
                        "payer": payers[i],
                        "payee": payers[(i + 1) % PAYERS],
                        "minutes": 1,
                    }
                status, data = await client.post("/ledger/transfers", headers, msgspec.json.encode(body))
                if status != 201:
                    raise SystemExit(f"a payment was refused: {status} {data[:200]!r}")
                if remote:
                    committed[msgspec.json.decode(data)["id"]] = time.time()
        finally:
            client.close()

    # The same payers paying each other first: the local rate on this machine, in this run, to compare with.
    t0 = time.time()
    await asyncio.gather(*(pay(i, remote=False) for i in range(PAYERS)))
    local_rate = per_payer * PAYERS / (time.time() - t0)
    t0 = time.time()
    await asyncio.gather(*(pay(i, remote=True) for i in range(PAYERS)))
    async with httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp:

        async def answered() -> bool:
            peers = (await status(rhttp))["peers"]
            assert isinstance(peers, list)
            return int(peers[0]["in_flight_out"]["payments"]) == 0

        await until(answered, "hillside's decisions reach riverside")
    conn = await asyncpg.connect(river.database_url)
    try:
        rows = await conn.fetch(
            "SELECT transfer, extract(epoch FROM seen_at) AS at FROM federation.crossnet WHERE kind = 'accepted'"
        )
    finally:
        await conn.close()
    seen = {r["transfer"]: float(r["at"]) for r in rows}
    latencies = [seen[t] - at for t, at in committed.items() if t in seen]
    conn = await asyncpg.connect(hill.database_url)
    try:
        rows = await conn.fetch(
            """SELECT key, extract(epoch FROM created_at) AS queued, extract(epoch FROM done_at) AS done
               FROM federation.outbox WHERE kind = 'federation.settle.decide.v1'"""
        )
    finally:
        await conn.close()
    prefix = f"decide {river.origin} "
    settled = {r["key"].removeprefix(prefix): (float(r["queued"]), float(r["done"])) for r in rows if r["done"]}
    hops = Hops([], [], [])
    for t, at in committed.items():
        if t in seen and t in settled:
            queued, done = settled[t]
            hops.replicated.append(queued - at)
            hops.decided.append(done - queued)
            hops.answered.append(seen[t] - done)
    return max(seen.values()) - t0, latencies, hops, local_rate


@dataclass
class Hops:
    """Where a cross-network trade's latency goes: the payer's commit until hillside queued the decision (publish and
    replicate), until hillside's ledger decided it (settle), until the decision is in riverside's copy (answer)."""

    replicated: list[float]
    decided: list[float]
    answered: list[float]


async def cosign_latencies(net: Network, since: float) -> list[float]:
    """For each checkpoint the network signed after ``since`` (POSIX time) that a witness cosigned: seconds from
    signing to the cosignature being stored, and so served (the backlog's checkpoints, signed before either node
    ran, are left out)."""
    conn = await asyncpg.connect(net.database_url)
    try:
        rows = await conn.fetch(
            """SELECT extract(epoch FROM min(w.added_at) - c.created_at) AS wait
               FROM ledger.checkpoints c JOIN ledger.cosignatures w USING (size)
               WHERE c.created_at > to_timestamp($1) GROUP BY c.size, c.created_at""",
            since,
        )
    finally:
        await conn.close()
    return [float(r["wait"]) for r in rows]
