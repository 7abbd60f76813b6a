"""A running exchange app (in-process, on a fresh database) wired to the session's real ledger, and members."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from litestar import Litestar

from shared.settings import ApiToken, ExchangeSettings, LedgerSettings, Settings
from tests.ledger.conftest import ORIGIN, TOKENS

COORDINATOR = {"Authorization": f"Bearer {TOKENS['coordinator']}"}
AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
PASSWORD = "correct horse battery"


def exchange_settings(**exchange: Any) -> Settings:
    return Settings(
        origin=ORIGIN,
        ledger=LedgerSettings(
            tokens=[
                ApiToken(name=role, role=role, sha256=hashlib.sha256(token.encode()).hexdigest())  # type: ignore[arg-type]
                for role, token in TOKENS.items()
            ]
        ),
        exchange=ExchangeSettings(ledger_token=TOKENS["service"], **exchange),
    )


@dataclass
class Member:
    id: str
    email: str
    headers: dict[str, str]
    account: str | None = None


@dataclass
class Exchange:
    app: Litestar
    # The app in-process (AsyncTestClient), or served over real HTTP (an httpx client on its address).
    client: httpx.AsyncClient
    database_url: str
    members: list[Member] = field(default_factory=list)

    async def call(self, method: str, path: str, who: Member | None = None, **kwargs: Any) -> Any:
        headers = who.headers if who else COORDINATOR
        r = await self.client.request(method, path, headers=headers, **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    async def member(self, name: str, *, approve: bool = True, **profile: Any) -> Member:
        """A member who applied, was approved by the network coordinator, and signed in with a bearer token."""
        member_id, email = await self.apply(name, **profile)
        if approve:
            await self.call("POST", f"/api/members/{member_id}/approval")
        r = await self.sign_in(email)
        assert r.status_code == 201, r.text
        member = Member(member_id, email, {"Authorization": f"Bearer {r.json()['token']}"})
        if approve:
            member.account = await self.until(
                lambda: self._account(member), lambda account: account is not None, "the ledger account to open"
            )
        self.members.append(member)
        return member

    async def coordinator(self, name: str) -> Member:
        """A member with the coordinator role, who joined by an invitation the network's coordinator made."""
        invitation = await self.call("POST", "/api/invitations", json={"role": "coordinator"})
        email = f"{name.lower().replace(' ', '.')}.{secrets.token_hex(3)}@example.org"
        body = {"token": invitation["token"], "name": name, "email": email, "password": PASSWORD}
        joined = await self.call("POST", "/api/invitations/join", json=body)
        r = await self.sign_in(email)
        assert r.status_code == 201, r.text
        member = Member(joined["id"], email, {"Authorization": f"Bearer {r.json()['token']}"})
        self.members.append(member)
        return member

    async def apply(self, name: str, **profile: Any) -> tuple[str, str]:
        """Apply to join (pending until a coordinator approves); returns the applicant's member id and email."""
        email = f"{name.lower().replace(' ', '.')}.{secrets.token_hex(3)}@example.org"
        r = await self.client.post(
            "/api/applications", json={"name": name, "email": email, "password": PASSWORD, **profile}
        )
        assert r.status_code == 201, r.text
        return r.json()["id"], email

    async def sign_in(self, email: str, password: str = PASSWORD, **fields: Any) -> httpx.Response:
        """``POST /api/sessions`` (a bearer token unless ``kind="cookie"``); the response, whatever it is."""
        return await self.client.post("/api/sessions", json={"email": email, "password": password, **fields})

    async def event_count(self) -> int:
        """How many events the exchange has stored, in all streams, once the outbox has nothing left to record."""
        await self.outbox_idle()
        async with self.db() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM exchange.events"))

    async def outbox_idle(self) -> None:
        """Wait until the ledger has answered every command and the answers are recorded as events."""

        async def pending() -> int:
            return int((await self.call("GET", "/ready"))["outbox_pending"])

        await self.until(pending, lambda n: n == 0, "the outbox to empty")

    async def _account(self, member: Member) -> str | None:
        me = await self.call("GET", "/api/me", member)
        return me["account"]  # type: ignore[no-any-return]

    async def until(self, probe: Any, done: Any, what: str, patience: float = 20.0) -> Any:
        """Poll ``probe()`` until ``done(value)``: the outbox tells the ledger in the background."""
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            value = await probe()
            if done(value):
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
            await asyncio.sleep(0.05)

    async def exchange_status(self, exchange: str, who: Member, status: str, patience: float = 20.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            return await self.call("GET", f"/api/exchanges/{exchange}", who)  # type: ignore[no-any-return]

        return await self.until(  # type: ignore[no-any-return]
            probe, lambda ex: ex["status"] == status, f"exchange {exchange} to be {status}", patience
        )

    async def balance(self, who: Member) -> int:
        return int((await self.call("GET", "/api/me/balance", who))["balance"])

    async def refused(self, method: str, path: str, who: Member | None = None, **kwargs: Any) -> int:
        """Make a call that must be refused; returns its 4xx status."""
        headers = who.headers if who else COORDINATOR
        r = await self.client.request(method, path, headers=headers, **kwargs)
        assert 400 <= r.status_code < 500, f"{method} {path}: {r.status_code} {r.text}"
        return r.status_code

    async def publish(self, who: Member, title: str, description: str = "Ask me.", **fields: Any) -> dict[str, Any]:
        """A listing of ``who`` (an offer in "other" unless ``fields`` say otherwise)."""
        body = {"kind": "offer", "category": "other", "title": title, "description": description, **fields}
        return await self.call("POST", "/api/listings", who, json=body)  # type: ignore[no-any-return]

    async def trade(
        self, provider: Member, receiver: Member, minutes: int, *, memo: str | None = None, category: str = "other"
    ) -> str:
        """A one-to-one exchange on the provider's offer, from proposal to the receiver's confirmation; its id."""
        listing = await self.publish(provider, f"Help with {category}", category=category)
        ex: str = (await self.call("POST", "/api/exchanges", receiver, json={"listing": listing["id"]}))["id"]
        await self.call("POST", f"/api/exchanges/{ex}/accept", provider)
        await self.call(
            "POST",
            f"/api/exchanges/{ex}/record",
            provider,
            json={"minutes": minutes, **({"memo": memo} if memo else {})},
        )
        await self.call("POST", f"/api/exchanges/{ex}/confirm", receiver)
        return ex

    @asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection to the exchange's database, for what only the database shows (events, outbox)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            yield conn
        finally:
            await conn.close()

    async def pot_account(self) -> str:
        """The community pot's ledger account, once the exchange has opened it."""

        async def probe() -> str | None:
            async with self.db() as conn:
                return await conn.fetchval("SELECT account FROM exchange.pot")  # type: ignore[no-any-return]

        return await self.until(probe, lambda account: account is not None, "the pot's ledger account")  # type: ignore[no-any-return]

    async def ledger(self, path: str, **params: Any) -> Any:
        """Read the exchange's ledger directly, with the auditor's token."""
        async with httpx.AsyncClient(base_url=self.app.state.ledger.base_url, headers=AUDITOR) as client:
            r = await client.get(path, params=params)
        assert r.status_code == 200, f"ledger GET {path}: {r.status_code} {r.text}"
        return r.json()

    async def ledger_lines(self, account: str) -> list[dict[str, Any]]:
        """The account's statement lines in the ledger, newest first."""
        return (await self.ledger(f"/accounts/{account}/statement", limit=500))["lines"]  # type: ignore[no-any-return]

    async def ledger_balance(self, account: str) -> int:
        return int((await self.ledger(f"/accounts/{account}"))["balance"])

    async def ledger_size(self) -> int:
        """The size of the ledger's public log, from its latest signed checkpoint."""
        async with httpx.AsyncClient(base_url=self.app.state.ledger.base_url) as client:
            r = await client.get("/log/checkpoint")
        assert r.status_code == 200, r.text
        return int(r.text.splitlines()[1])

    async def ledger_transfers(self, ref: str) -> list[dict[str, Any]]:
        """Every transfer in the ledger's public log that names ``ref`` as its exchange, with its log index."""
        found: list[dict[str, Any]] = []
        start = 0
        while entries := (await self.ledger("/log/entries", start=start))["entries"]:
            for item in entries:
                entry = json.loads(base64.b64decode(item["data"]))
                if entry["type"] == "ledger.transfer.v1" and entry.get("exchange_ref") == ref:
                    found.append({**entry, "index": item["index"]})
            start += len(entries)
        return found
