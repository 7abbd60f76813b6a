"""Defect 2 of issue 14: while the node's PostgreSQL is gone, every request and ``/ready`` answer 503 problems.

A load balancer or a person reading the answer must see "unavailable, try again", not a server bug (500).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx

from services.node.compose import build_node
from services.node.database import migrate_all
from services.node.postgres import PostgresServer
from shared.note import Signer, write_signer_key
from shared.settings import ApiToken, Settings
from tests.serving import serving

COORDINATOR = "coordinator-secret"
SERVICE = "service-secret"
ADA = {"name": "Ada", "email": "ada@example.org", "password": "a long passphrase", "skills": [], "area": "Riverside"}


def _settings(data_dir: Path) -> Settings:
    settings = Settings(origin="timebank.test/lost", data_dir=str(data_dir))
    write_signer_key(settings.key_path, Signer.generate(settings.origin))
    settings.ledger.tokens = [
        ApiToken(name=role, role=role, sha256=hashlib.sha256(token.encode()).hexdigest())  # type: ignore[arg-type]
        for role, token in (("coordinator", COORDINATOR), ("service", SERVICE))
    ]
    settings.exchange.ledger_token = SERVICE
    return settings


def _assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, (answer.request.url, answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("/unavailable")


async def test_every_request_answers_503_while_the_database_is_gone(server_tmp_path: Path) -> None:
    postgres = PostgresServer(server_tmp_path / "postgres", fast=True)
    postgres.start()
    try:
        postgres.create_database("timebank")
        await migrate_all(postgres.dsn("timebank"))
        app = build_node(_settings(server_tmp_path), postgres.dsn("timebank"))
        coordinator = {"Authorization": f"Bearer {COORDINATOR}"}
        async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (await client.get("/ready")).status_code == 200
            assert (await client.get("/ledger/ready")).status_code == 200
            await asyncio.to_thread(postgres.stop)
            requests = [
                client.get("/ready"),
                client.get("/ledger/ready"),
                client.get("/api/listings"),
                client.get("/ledger/log/entries?start=0&end=1"),
                client.get("/ledger/log/balances"),
                client.post("/ledger/accounts", json={"key": "member-1"}, headers=coordinator),
                client.post("/api/applications", json=ADA),
                client.get("/api/me", headers={"Authorization": "Bearer not-a-session"}),
            ]
            for answer in [await request for request in requests]:
                _assert_unavailable(answer)
            # PostgreSQL back: the node answers again, without being restarted.
            await asyncio.to_thread(postgres.start)
            for _ in range(100):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/ledger/ready")).status_code == 200
    finally:
        postgres.stop()
