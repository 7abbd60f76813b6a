"""``timebank bench exchange``: search latency and end-to-end exchanges per second over HTTP, on a loaded network.

The network (members with ledger accounts, listings with varied texts) is loaded in bulk, not request by
request, but out of the real parts: events of the real types sealed by the real vault, ledger accounts opened
through the ledger's API with the exchange's own client and keys, and read models written by the real
``projections.projection`` (its upserts collected and sent in large batches). A real ``timebank serve`` process
(exchange at ``/``, ledger at ``/ledger``) then answers every measured request.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import httpx
import msgspec
import uvloop

from services.exchange import events as ev
from services.exchange import outbox, projections
from services.exchange.auth import hash_password, token_digest
from services.exchange.service import account_key, new_id
from services.exchange.vault import Vault
from services.exchange.writes import compose
from services.ledger.client import LedgerClient, OpenedAccount
from services.node.bench.loadgen import LoadClient
from services.node.benchdb import bench_databases
from services.node.processes import free_port, server_tempdir
from shared.db import Connection
from shared.note import Signer, write_signer_key

ORIGIN = "bench.timebank.local/exchange"
SERVICE_TOKEN = "bench-service-token"
COORDINATOR_TOKEN = "bench-coordinator-token"
COORDINATOR = "network:bench-coordinator"
PASSWORD = "bench password, not secret"
# The network's credit limit for the run: members may owe up to 10,000 hours, so no exchange is refused.
FLOOR = -600_000
SEARCH_TARGET_P99 = 0.050
SEARCH_CLIENTS = 4
EXCHANGE_TARGET_RATE = 300.0

# ---- Word lists for listing texts ----

SKILLS: dict[str, list[str]] = {
    "food": ["cooking", "baking bread", "meal prep", "grocery shopping", "soup", "jam making", "vegetarian meals",
             "lunch boxes", "cake decorating", "food bank runs"],
    "transport": ["lift to the clinic", "airport run", "bike repair", "van for moving", "school run",
                  "shopping trip", "wheelchair transport", "hospital drive", "station pickup", "furniture delivery"],
    "childcare": ["babysitting", "homework club", "school pickup", "playdate", "toddler group", "bedtime stories",
                  "holiday club", "swimming lessons", "after school care", "nappy changing"],
    "care_and_health": ["companionship visits", "medication reminders", "physio exercises", "hospital visit",
                        "dog walking", "gentle yoga", "first aid", "hand massage", "respite care", "blood pressure"],
    "home_repair": ["plumbing", "leaking tap", "painting walls", "wallpaper", "putting up shelves",
                    "furniture assembly", "fence repair", "gutter cleaning", "tiling", "carpentry", "lawn mowing",
                    "garden clearance", "door hinges", "draught proofing"],
    "tutoring": ["maths tutoring", "physics", "chemistry", "essay writing", "piano lessons", "guitar lessons",
                 "reading practice", "exam revision", "coding for beginners", "history homework"],
    "tech_help": ["laptop setup", "smartphone basics", "printer problems", "wifi troubleshooting", "email setup",
                  "video calls", "spreadsheets", "website building", "photo backup", "virus removal"],
    "admin_and_paperwork": ["tax return", "benefits forms", "letter writing", "CV writing", "job applications",
                            "household budgeting", "council forms", "pension paperwork", "insurance claims",
                            "filing and sorting"],
    "language": ["Spanish conversation", "French lessons", "English practice", "Arabic", "Polish", "sign language",
                 "Mandarin", "German grammar", "Portuguese", "Urdu"],
    "company_and_listening": ["tea and chat", "afternoon walks", "phone calls", "board games", "reading aloud",
                              "knitting circle", "listening ear", "chess", "crossword puzzles", "gardening together"],
    "other": ["sewing", "clothes alterations", "photography", "pet sitting", "plant care", "haircuts",
              "dog grooming", "event setup", "choir practice", "crafts"],
}  # fmt: skip
AREAS = ["Riverside", "Old Town", "Northfield", "Elm Park", "Canal Quarter", "Hillcrest", "Station Road",
         "Millbrook", "St Anne's", "Greenway", "Harbour", "Southgate", "Westbury", "Oakfield", "Market Square",
         "Brookside", "Castle Hill", "Newtown", "Parkside", "Fairview"]  # fmt: skip
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kemi", "Luis", "Mira",
         "Nils", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Vera", "Wen", "Yusuf", "Zoe"]  # fmt: skip
LAST = ["Abbott", "Baker", "Chen", "Diallo", "Evans", "Fischer", "Garcia", "Hughes", "Ibrahim", "Jones",
        "Kowalski", "Lopez", "Murphy", "Nguyen", "Okafor", "Patel", "Rossi", "Smith", "Tanaka", "Walsh"]  # fmt: skip
WHEN = ["weekday evenings", "Saturday mornings", "weekends", "Tuesday and Thursday afternoons", "most mornings",
        "school holidays", "after 6pm", "Sunday afternoons", "flexible", "Monday to Friday daytime"]  # fmt: skip
OFFER_TITLES = ["{s}", "Can help with {s}", "Offering {s}", "{s} for neighbours", "Happy to do {s}"]
REQUEST_TITLES = ["Looking for {s}", "Need help with {s}", "Wanted: {s}", "Could someone help with {s}?"]
SENTENCES = [
    "I have done {s} for years and enjoy it.",
    "Also glad to help with {t} if that is useful.",
    "Based near {a}, happy to travel a little.",
    "Patient, friendly and reliable; references from neighbours available.",
    "Usually free {w}.",
    "Bring your own materials if you can, otherwise we will work something out.",
    "It would make a real difference to our family.",
    "Quick jobs or longer ones, just ask.",
    "Experienced with older people and with children.",
    "Can also show you how to do {s} yourself next time.",
]
# Words people search for: single terms and pairs drawn from the same texts.
SEARCH_WORDS = sorted(
    {w.lower().strip("?:,.") for phrases in SKILLS.values() for p in phrases for w in p.split() if len(w) > 3}
    - {"with", "from", "after", "basics", "together", "beginners"}
)


def listing_text(rng: random.Random, category: str, kind: str) -> ev.ListingText:
    skill, other = rng.sample(SKILLS[category], 2)
    area = rng.choice(AREAS)
    when = rng.choice(WHEN)
    title = rng.choice(OFFER_TITLES if kind == "offer" else REQUEST_TITLES).format(s=skill)
    sentences = rng.sample(SENTENCES, rng.randint(2, 4))
    description = " ".join(s.format(s=skill, t=other, a=area, w=when) for s in sentences)
    return ev.ListingText(title=title[0].upper() + title[1:], description=description, area=area, availability=when)


# ---- Results ----


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]
    target: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def quantile(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def line(self) -> str:
        rate = f"{self.rate:>9,.0f}/s" if self.seconds else " " * 11
        took = f"({self.count:,} in {self.seconds:.1f} s)" if self.seconds else f"({self.count:,})"
        return (
            f"{self.name:<32} {rate} {self.quantile(50) * 1000:>8.1f}ms {self.quantile(99) * 1000:>8.1f}ms"
            f"  {self.target:<22} {took}"
        )


# ---- Loading the network ----


@dataclass
class Network:
    members: list[str]
    tokens: dict[str, str]  # member -> bearer token
    listings: list[tuple[str, str, str]]  # (listing, member, kind)
    emails: dict[str, str] = field(default_factory=dict)


async def _open_accounts(ledger: LedgerClient, members: list[str]) -> dict[str, OpenedAccount]:
    """Open the members' ledger accounts through the ledger's API, with the keys the exchange's outbox uses.

    64 requests in flight, so the ledger commits them in groups, spread over 8 clients of 8 connections: one httpx
    pool of 64 connections spent more CPU choosing a connection for each request than the ledger spent on it."""
    opened: dict[str, OpenedAccount] = {}
    queue = iter(members)

    async def lane(client: LedgerClient) -> None:
        for member in queue:
            opened[member] = await client.open_account(account_key(member), "member")

    clients = [LedgerClient(ledger.base_url, SERVICE_TOKEN, max_connections=8) for _ in range(8)]
    for client in clients:
        await client.start()
    try:
        await asyncio.gather(*(lane(client) for client in clients for _ in range(8)))
    finally:
        for client in clients:
            await client.close()
    return opened


async def load(conn: Connection, ledger: LedgerClient, n_members: int, n_listings: int, seed: int) -> Network:
    """Members (applied, approved, ledger account opened), their listings and bearer tokens, in one transaction."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    password_hash = await hash_password(PASSWORD)  # one real argon2id hash, shared: sign-in works for everyone
    members = [new_id("mem") for _ in range(n_members)]
    accounts = await _open_accounts(ledger, members)
    streams: dict[str, list[ev.AnyEvent]] = {}
    network = Network(members=members, tokens={}, listings=[])
    outbox_rows, session_rows = [], []
    async with conn.transaction():
        vault = Vault(conn)
        for i, member in enumerate(members):
            joined = now - timedelta(days=200, seconds=(n_members - i) * 60)
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            email = f"member{i}.{member[4:10]}@bench.example.org"
            network.emails[member] = email
            categories = rng.sample(list(SKILLS), 2)
            details = ev.MemberDetails(
                name=name,
                email=email,
                skills=[rng.choice(SKILLS[c]) for c in categories],
                area=rng.choice(AREAS),
                bio=f"{name.split()[0]} lives in {rng.choice(AREAS)} and likes {rng.choice(SKILLS[categories[0]])}.",
                password_hash=password_hash,
            )
            opened = accounts[member]
            streams[member] = [
                ev.MemberApplied(at=joined, member=member, details=await vault.seal(member, details)),
                ev.MemberApproved(at=joined + timedelta(hours=2), member=member, by=COORDINATOR),
                ev.LedgerAccountOpened(
                    at=joined + timedelta(hours=2, seconds=1), member=member, account=opened.account
                ),
            ]
            command = outbox.OpenLedgerAccount(key=account_key(member), kind="member", member=member)
            outcome = outbox.Delivered(result=opened)
            at = joined + timedelta(hours=2)
            outbox_rows.append(
                (command.key, command.__struct_config__.tag, msgspec.json.encode(command), at, 1, at,
                 at + timedelta(seconds=1), msgspec.json.encode(outcome))
            )  # fmt: skip
            token = "tbk_" + secrets.token_urlsafe(32)
            network.tokens[member] = token
            session_rows.append(
                (token_digest(token), member, "bearer", secrets.token_urlsafe(24), "bench", now + timedelta(days=30))
            )
        categories = list(SKILLS)
        for i in range(n_listings):
            member = rng.choice(members)
            listing = new_id("lst")
            kind: ev.Kind = "offer" if rng.random() < 0.6 else "request"
            category = rng.choice(categories)
            at = now - timedelta(days=60) + timedelta(seconds=i * 60 * 86400 / n_listings)
            text = await vault.seal(member, listing_text(rng, category, kind))
            streams[listing] = [
                ev.ListingPublished(
                    at=at,
                    listing=listing,
                    member=member,
                    kind=kind,
                    category=cast("ev.Category", category),
                    shared=rng.random() < 0.2,
                    expires=at + timedelta(days=90),
                    text=text,
                )
            ]
            network.listings.append((listing, member, kind))
        events = sorted(
            ((stream, n, e) for stream, history in streams.items() for n, e in enumerate(history, start=1)),
            key=lambda r: r[2].at,
        )
        await conn.copy_records_to_table(
            "events",
            schema_name="exchange",
            columns=["stream", "version", "type", "data", "at"],
            records=[(s, n, ev.tag_of(e), ev.encoder.encode(e), e.at) for s, n, e in events],
        )
        await conn.copy_records_to_table(
            "outbox",
            schema_name="exchange",
            columns=["key", "kind", "payload", "created_at", "attempts", "next_attempt_at", "done_at", "outcome"],
            records=outbox_rows,
        )
        await conn.copy_records_to_table(
            "sessions",
            schema_name="exchange",
            columns=["token_sha256", "member", "kind", "csrf", "label", "expires_at"],
            records=session_rows,
        )
        for key_write in vault.writes():  # the members' data keys, made by sealing
            await conn.execute(key_write.sql, *key_write.args)
        collected: dict[str, list[tuple[Any, ...]]] = {}
        for stream, history in streams.items():
            for write in (await projections.projection(vault, stream, history)).writes:
                ready = compose([write])  # (as a command would send it)
                collected.setdefault(ready.sql, []).append(ready.args)
        for query, rows in collected.items():
            for lo in range(0, len(rows), 5000):
                await conn.executemany(query, rows[lo : lo + 5000])
    await conn.execute("ANALYZE")  # what autovacuum would have done by the time a network is this size
    await _check_projected(conn, rng.sample(list(streams.items()), min(500, len(streams))))
    return network


async def _check_projected(conn: Connection, sample: list[tuple[str, list[ev.AnyEvent]]]) -> None:
    """Project a sample of the loaded streams one by one, as a command would, and check nothing changes."""

    async def rows() -> list[Any]:
        ids = [stream for stream, _ in sample]
        return [
            *await conn.fetch("SELECT * FROM exchange.members WHERE id = ANY($1::text[]) ORDER BY id", ids),
            *await conn.fetch("SELECT * FROM exchange.listings WHERE id = ANY($1::text[]) ORDER BY id", ids),
        ]

    before = await rows()
    tx = conn.transaction()
    await tx.start()
    try:
        vault = Vault(conn)
        for stream, history in sample:
            await projections.project(conn, vault, stream, history)
        after = await rows()
    finally:
        await tx.rollback()
    if [tuple(r) for r in before] != [tuple(r) for r in after] or len(before) != len(sample):
        raise RuntimeError("the bulk-loaded read models differ from what projections.project makes")


# ---- The node under test ----


class CpuMeter:
    """CPU seconds used by the node process and by the PostgreSQL cluster (its postmaster and backends), read
    from /proc: on a shared machine the cost per operation says more than the rate. Zero where /proc is not."""

    def __init__(self, node: int, postmaster: int | None) -> None:
        self.node = node
        self.postmaster = postmaster

    @staticmethod
    def _stat(pid: int, reaped: bool = False) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
        return ticks / os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float]:
        database = 0.0
        if self.postmaster is not None:
            database = self._stat(self.postmaster, reaped=True)
            try:
                children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
            except OSError:
                children = []
            database += sum(self._stat(int(child)) for child in children)
        return self._stat(self.node), database


def _config(workdir: Path, url: str, port: int) -> Path:
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    path = workdir / "bench-exchange.toml"
    path.write_text(
        f'origin = "{ORIGIN}"\nkey_file = "{workdir / "network.key"}"\n'
        f'[database]\nurl = "{url}"\n[http]\nport = {port}\n'
        f"[ledger]\ndefault_floor = {FLOOR}\n"
        f'[[ledger.tokens]]\nname = "bench-service"\nrole = "service"\nsha256 = "{digest(SERVICE_TOKEN)}"\n'
        f'[[ledger.tokens]]\nname = "bench-coordinator"\nrole = "coordinator"\nsha256 = "{digest(COORDINATOR_TOKEN)}"\n'
        f'[exchange]\nledger_token = "{SERVICE_TOKEN}"\n'
    )
    return path


async def _wait_ready(base: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(600):
            if proc.returncode is not None:
                raise RuntimeError("timebank serve exited during start-up")
            try:
                r1, r2 = await http.get(base + "/ready"), await http.get(base + "/ledger/ready")
                if r1.status_code == r2.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("timebank serve did not become ready")


# ---- Measured phases ----


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


# ---- The run ----


async def _main(args: argparse.Namespace, root: Path) -> None:
    async with bench_databases(args.database_url, root, "timebank_bench_exchange") as databases:
        await _measure(args, root, databases.urls[0], databases.postmaster)


async def _measure(args: argparse.Namespace, root: Path, url: str, postmaster: int | None) -> None:
    proc = None
    try:
        write_signer_key(root / "network.key", Signer.generate(ORIGIN))
        conn = await asyncpg.connect(url)  # the node migrates both schemas as it starts
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.node.cli",
            "--config",
            str(_config(root, url, port)),
            "serve",
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        await _wait_ready(base, proc)
        print(f"{os.cpu_count()} CPUs; loading {args.members:,} members and {args.listings:,} listings ...", flush=True)
        t0 = time.perf_counter()
        async with LedgerClient(base + "/ledger", SERVICE_TOKEN) as ledger:
            network = await load(conn, ledger, args.members, args.listings, seed=1)
        print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
        await _sign_in_check(base, network)

        meter = CpuMeter(proc.pid, postmaster)
        print(f"searching: {args.searches:,} searches from {SEARCH_CLIENTS} clients ...", flush=True)
        before = meter.read()
        search, per_page = await search_phase(base, args.searches, SEARCH_CLIENTS, seed=2)
        search_cpu = [(b - a) / search.count for a, b in zip(before, meter.read(), strict=True)]
        warmup = min(1000, max(100, args.exchanges // 5))
        print(f"warming up: {warmup:,} exchanges (not measured), then ANALYZE as autovacuum would ...", flush=True)
        await exchange_phase(base, conn, network, warmup, args.clients, seed=4)
        await conn.execute("ANALYZE")
        print(f"exchanging: {args.exchanges:,} exchanges from {args.clients} clients ...", flush=True)
        before = meter.read()
        exchanges, steps = await exchange_phase(base, conn, network, args.exchanges, args.clients, seed=3)
        exchange_cpu = [(b - a) / exchanges.count for a, b in zip(before, meter.read(), strict=True)]
        await conn.close()

        print()
        print(f"{'phase':<32} {'rate':>11} {'p50':>10} {'p99':>10}  {'target':<22}")
        print(search.line())
        print(exchanges.line())
        for step in steps:
            print(step.line())
        print()
        print(f"search: {per_page:.1f} listings per page on average")
        for what, (node, database) in (("search", search_cpu), ("exchange", exchange_cpu)):
            db = f"{database * 1000:.2f} ms" if postmaster else "not measured (--database-url)"
            print(f"CPU per {what}: node {node * 1000:.2f} ms, PostgreSQL {db}")
        ok_search = search.quantile(99) < SEARCH_TARGET_P99
        ok_rate = exchanges.rate >= EXCHANGE_TARGET_RATE
        print(f"search p99 {'meets' if ok_search else 'MISSES'} the target; "
              f"exchanges/s {'meets' if ok_rate else 'MISSES'} the target")  # fmt: skip
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def _sign_in_check(base: str, network: Network) -> None:
    """One loaded member signs in for real (argon2id), so the loaded network is one the app accepts."""
    member = network.members[0]
    async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
        r = await http.post("/api/sessions", json={"email": network.emails[member], "password": PASSWORD})
    body = r.json()
    if r.status_code != 201 or body["member"] != member:
        raise RuntimeError(f"a loaded member cannot sign in: {r.status_code} {body}")


def run(args: argparse.Namespace) -> int:
    root = server_tempdir("timebank-bench-")
    try:
        uvloop.run(_main(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
