"""The measured phases of ``timebank bench exchange``: searches, then whole exchanges (propose, accept, record,
confirm) over HTTP, timed to the ledger's settlement."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from services.node.bench.exchange_load import AREAS, SEARCH_WORDS, SKILLS, Network
from services.node.bench.exchange_report import EXCHANGE_TARGET_RATE, SEARCH_TARGET_P99, Result
from services.node.bench.loadgen import LoadClient
from shared.db import Connection


async def _drive(name: str, total: int, workers: int, op: Callable[[int], Awaitable[int]]) -> Result:
    """Run ``op(i)`` for i in 0..total-1 from ``workers`` loops; ``op`` returns how many requests it made."""
    latencies: list[float] = []
    counter = iter(range(total))
    done = 0

    async def worker() -> None:
        nonlocal done
        for i in counter:
            t0 = time.perf_counter()
            made = await op(i)
            done += made
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Result(name, done, time.perf_counter() - start, latencies)


def _search_params(rng: random.Random) -> dict[str, str]:
    """One search as members make them: words, words with filters, browsing the newest, ranked or not."""
    params: dict[str, str] = {}
    roll = rng.random()
    if roll < 0.85:
        words = rng.sample(SEARCH_WORDS, 2 if rng.random() < 0.35 else 1)
        if len(words) == 2 and rng.random() < 0.6:  # a pair from one listing's vocabulary, not a random pair
            words = rng.choice(rng.choice(list(SKILLS.values()))).lower().split()[:2]
        params["q"] = " ".join(words)
    if rng.random() < 0.3:
        params["category"] = rng.choice(list(SKILLS))
    if rng.random() < 0.2:
        params["area"] = rng.choice(AREAS)
    if rng.random() < 0.2:
        params["kind"] = rng.choice(["offer", "request"])
    if "q" in params and rng.random() < 0.2:
        params["order"] = "newest"
    return params


async def search_phase(base: str, total: int, clients: int, seed: int) -> tuple[Result, float]:
    """``total`` searches from ``clients`` concurrent members; a quarter of them read the next page too."""
    rng = random.Random(seed)
    latencies: list[float] = []
    items = 0

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, trust_env=False) as http:

        async def get(params: dict[str, str]) -> dict[str, Any]:
            nonlocal items
            t0 = time.perf_counter()
            r = await http.get("/api/listings/", params=params)
            body = r.content
            if r.status_code != 200:
                raise RuntimeError(f"search {params} answered {r.status_code}: {body[:300]!r}")
            latencies.append(time.perf_counter() - t0)
            page: dict[str, Any] = msgspec.json.decode(body)
            items += len(page["items"])
            return page

        async def op(_: int) -> int:
            params = _search_params(rng)
            page = await get(params)
            if page["next"] and rng.random() < 0.25:
                await get({**params, "cursor": page["next"]})
                return 2
            return 1

        run = await _drive("search over HTTP", total, clients, op)
    target = f"target p99 < {SEARCH_TARGET_P99 * 1000:.0f} ms"
    return Result("search over HTTP", run.count, run.seconds, latencies, target), items / max(1, run.count)


class _Flow:
    """propose -> accept -> record -> confirm over HTTP, as two members would do it."""

    def __init__(self, http: LoadClient, network: Network) -> None:
        self.http = http
        self.network = network
        # Made once per member: the client's own CPU is taken from the node and PostgreSQL on a shared machine.
        self.headers = {
            member: f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n".encode()
            for member, token in network.tokens.items()
        }
        self.steps: dict[str, list[float]] = {s: [] for s in ("propose", "accept", "record", "confirm")}
        self.started: dict[str, datetime] = {}
        self.confirmed: dict[str, datetime] = {}

    async def call(self, step: str, path: str, member: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        status, data = await self.http.post(path, self.headers[member], msgspec.json.encode(body or {}))
        if status >= 300:
            raise RuntimeError(f"{step} {path} answered {status}: {data[:300]!r}")
        self.steps[step].append(time.perf_counter() - t0)
        answer: dict[str, Any] = msgspec.json.decode(data)
        return answer

    async def one(self, rng: random.Random) -> None:
        listing, owner, kind = rng.choice(self.network.listings)
        proposer = rng.choice(self.network.members)
        while proposer == owner:
            proposer = rng.choice(self.network.members)
        provider, receiver = (owner, proposer) if kind == "offer" else (proposer, owner)
        started = datetime.now(UTC)
        ex = await self.call("propose", "/api/exchanges/", proposer, {"listing": listing, "note": "bench"})
        self.started[ex["id"]] = started
        path = f"/api/exchanges/{ex['id']}"
        await self.call("accept", path + "/accept", owner)
        await self.call("record", path + "/record", provider, {"minutes": rng.randint(15, 180), "memo": "bench"})
        await self.call("confirm", path + "/confirm", receiver)
        self.confirmed[ex["id"]] = datetime.now(UTC)


async def exchange_phase(
    base: str, conn: Connection, network: Network, total: int, clients: int, seed: int
) -> tuple[Result, list[Result]]:
    """``clients`` concurrent pairs of members complete ``total`` exchanges; the clock stops at the last
    settlement (the ledger transfer recorded back in the exchange through the outbox)."""
    rng = random.Random(seed)
    address = urlsplit(base)
    assert address.hostname is not None
    assert address.port is not None
    http = LoadClient(address.hostname, address.port)
    flow = _Flow(http, network)

    async def op(_: int) -> int:
        await flow.one(rng)
        return 1

    t0 = datetime.now(UTC)
    try:
        await _drive("exchanges", total, clients, op)
    finally:
        http.close()
    ids = list(flow.started)
    deadline = time.monotonic() + 120
    while True:
        rows = await conn.fetch(
            """SELECT e.id, e.status, max(l.settled_at) AS settled FROM exchange.exchanges e
               JOIN exchange.exchange_lines l ON l.exchange = e.id WHERE e.id = ANY($1::text[]) GROUP BY e.id""",
            ids,
        )
        stuck = [r for r in rows if r["status"] not in ("confirmed", "completed")]
        if stuck:
            raise RuntimeError(f"{len(stuck)} exchanges did not settle, e.g. {stuck[0]['id']} is {stuck[0]['status']}")
        if sum(r["status"] == "completed" for r in rows) == len(ids):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("exchanges still waiting for the ledger after 120 s")
        await asyncio.sleep(0.05)
    last = max(r["settled"] for r in rows)
    per_exchange = [(r["settled"] - flow.started[r["id"]]).total_seconds() for r in rows]
    target = f"target >= {EXCHANGE_TARGET_RATE:.0f}/s"
    result = Result("exchanges, propose to settled", len(ids), (last - t0).total_seconds(), per_exchange, target)
    steps = [Result(f"  {step} (HTTP request)", len(lat), 0.0, lat) for step, lat in flow.steps.items()]
    lag = [(r["settled"] - flow.confirmed[r["id"]]).total_seconds() for r in rows]
    steps.append(Result("  confirmed to settled (outbox)", len(lag), 0.0, lag))
    return result, steps
