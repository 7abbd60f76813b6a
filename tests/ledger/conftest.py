"""Fixtures for ledger tests: a running ledger app on a fresh database, with tokens for each role."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.ledger.app import create_app
from shared.note import Signer
from shared.settings import ApiToken, LedgerSettings, Settings

ORIGIN = "timebank.test/riverside"
TOKENS = {"service": "svc-secret", "coordinator": "coord-secret", "auditor": "audit-secret", "federation": "fed-secret"}


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def ledger_settings(default_floor: int = -600) -> Settings:
    return Settings(
        origin=ORIGIN,
        ledger=LedgerSettings(
            default_floor=default_floor,
            tokens=[
                ApiToken(name=role, role=role, sha256=hashlib.sha256(token.encode()).hexdigest())  # type: ignore[arg-type]
                for role, token in TOKENS.items()
            ],
        ),
    )


@dataclass
class Ledger:
    """A running ledger and what a test needs to talk to it."""

    app: Litestar
    client: AsyncTestClient[Litestar]
    signer: Signer
    database_url: str

    async def open_account(self, key: str, **fields: object) -> dict[str, object]:
        r = await self.client.post("/accounts", json={"key": key, **fields}, headers=auth("coordinator"))
        assert r.status_code in (200, 201), r.text
        return r.json()  # type: ignore[no-any-return]

    async def transfer(self, key: str, payer: str, payee: str, minutes: int, **fields: object):  # type: ignore[no-untyped-def]
        return await self.client.post(
            "/transfers",
            json={"key": key, "payer": payer, "payee": payee, "minutes": minutes, **fields},
            headers=auth("service"),
        )

    async def balance(self, account: str) -> int:
        r = await self.client.get(f"/accounts/{account}", headers=auth("auditor"))
        assert r.status_code == 200, r.text
        return int(r.json()["balance"])


@pytest.fixture
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
async def ledger(database_url: str, signer: Signer) -> AsyncIterator[Ledger]:
    app = create_app(ledger_settings(), database_url=database_url, signer=signer)
    async with AsyncTestClient(app=app) as client:
        yield Ledger(app, client, signer, database_url)
