"""The network that ``timebank bench exchange`` measures, loaded in bulk: members with ledger accounts, listings
with varied texts, bearer tokens.

Not loaded request by request, but out of the real parts: events of the real types sealed by the real vault, ledger
accounts opened through the ledger's API with the exchange's own client and keys, and read models written by the
real ``projections.projection`` (its upserts collected and sent in large batches). Two checks then hold the load to
what the app itself would make: a sample projected one by one changes nothing, and a loaded member signs in.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import msgspec

from services.exchange import events as ev
from services.exchange import outbox, projections
from services.exchange.auth import hash_password, token_digest
from services.exchange.service import account_key, new_id
from services.exchange.vault import Vault
from services.exchange.writes import compose
from services.ledger.client import LedgerClient, OpenedAccount
from shared.db import Connection

SERVICE_TOKEN = "bench-service-token"
COORDINATOR = "network:bench-coordinator"
PASSWORD = "bench password, not secret"

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


async def sign_in_check(base: str, network: Network) -> None:
    """One loaded member signs in for real (argon2id), so the loaded network is one the app accepts."""
    member = network.members[0]
    async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
        r = await http.post("/api/sessions", json={"email": network.emails[member], "password": PASSWORD})
    body = r.json()
    if r.status_code != 201 or body["member"] != member:
        raise RuntimeError(f"a loaded member cannot sign in: {r.status_code} {body}")
