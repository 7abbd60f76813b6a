"""A running exchange app (in-process, on a fresh database) wired to the session's real ledger, and members."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from shared.settings import ApiToken, ExchangeSettings, LedgerSettings, Settings
from tests.ledger.conftest import ORIGIN, TOKENS

COORDINATOR = {"Authorization": f"Bearer {TOKENS['coordinator']}"}
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
    client: AsyncTestClient[Litestar]
    database_url: str
    members: list[Member] = field(default_factory=list)

    async def call(self, method: str, path: str, who: Member | None = None, **kwargs: Any) -> Any:
        headers = who.headers if who else COORDINATOR
        r = await self.client.request(method, path, headers=headers, **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    async def member(self, name: str, *, approve: bool = True, **profile: Any) -> Member:
        """A member who applied, was approved by the network coordinator, and signed in with a bearer token."""
        email = f"{name.lower().replace(' ', '.')}.{secrets.token_hex(3)}@example.org"
        r = await self.client.post(
            "/api/applications", json={"name": name, "email": email, "password": PASSWORD, **profile}
        )
        assert r.status_code == 201, r.text
        member_id = r.json()["id"]
        if approve:
            await self.call("POST", f"/api/members/{member_id}/approval")
        r = await self.client.post("/api/sessions", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        member = Member(member_id, email, {"Authorization": f"Bearer {r.json()['token']}"})
        if approve:
            member.account = await self.until(
                lambda: self._account(member), lambda account: account is not None, "the ledger account to open"
            )
        self.members.append(member)
        return member

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

    async def exchange_status(self, exchange: str, who: Member, status: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            return await self.call("GET", f"/api/exchanges/{exchange}", who)  # type: ignore[no-any-return]

        return await self.until(probe, lambda ex: ex["status"] == status, f"exchange {exchange} to be {status}")  # type: ignore[no-any-return]

    async def balance(self, who: Member) -> int:
        return int((await self.call("GET", "/api/me/balance", who))["balance"])
