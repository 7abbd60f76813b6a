"""A real log for the audit tests: a ledger database, a `timebank serve` process, members trading, an export."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.node.cli import main
from services.node.postgres import PostgresServer
from shared.note import Signer, write_signer_key
from tests.ledger.conftest import ORIGIN, auth
from tests.ledger.processes import serve


@dataclass
class Node:
    """A served ledger with a populated log, and its export."""

    url: str
    signer: Signer
    database_url: str
    workdir: Path
    accounts: list[str] = field(default_factory=list)

    @property
    def vkey(self) -> str:
        return self.signer.verifier().to_text()


async def populate(url: str, members: int = 24, transfers: int = 640, seed: int = 4, run: str = "a") -> list[str]:
    """Members trade at random (some refused at their floor), a few transfers are reversed, one account closes.

    ``run`` prefixes every idempotency key, so populating a node again adds to its log.
    """
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, headers=auth("coordinator"), timeout=60) as http:

        async def open_account(key: str, **fields: object) -> str:
            r = await http.post("/accounts", json={"key": key, **fields})
            assert r.status_code in (200, 201), r.text
            return str(r.json()["id"])

        pot = await open_account(f"{run}-pot", kind="community", floor=0)
        ids = [await open_account(f"{run}-member-{i}") for i in range(members)]
        ids.append(await open_account(f"{run}-capped", ceiling=300))
        r = await http.put(f"/accounts/{ids[0]}/limits", json={"floor": -900})
        assert r.status_code == 200, r.text

        async def pay(i: int) -> str | None:
            payer, payee = rng.sample(ids, 2)
            body = {"key": f"{run}-t-{i}", "payer": payer, "payee": payee, "minutes": rng.randint(5, 180)}
            r = await http.post("/transfers", json=body)
            assert r.status_code in (201, 409), r.text
            return str(r.json()["id"]) if r.status_code == 201 else None

        made: list[str] = []
        for lo in range(0, transfers, 40):
            made += [t for t in await asyncio.gather(*(pay(i) for i in range(lo, lo + 40))) if t]
        for n, tid in enumerate(made[:: max(1, len(made) // 6)][:6]):
            r = await http.post(f"/transfers/{tid}/reversal", json={"key": f"{run}-fix-{n}"})
            assert r.status_code in (201, 409), r.text
        closing = await open_account(f"{run}-leaving")
        r = await http.post(f"/accounts/{closing}/close")
        assert r.status_code == 200, r.text
        r = await http.post("/transfers", json={"key": f"{run}-grant", "payer": ids[1], "payee": pot, "minutes": 30})
        assert r.status_code in (201, 409), r.text
        return [pot, *ids]


def _node(postgres_server: PostgresServer, workdir: Path, name: str, transfers: int = 640) -> Iterator[Node]:
    postgres_server.drop_database(name)
    postgres_server.create_database(name)
    signer = Signer.generate(ORIGIN)
    write_signer_key(workdir / "network.key", signer)
    dsn = postgres_server.dsn(name)
    try:
        with serve(workdir, dsn, workdir / "network.key") as url:
            node = Node(url, signer, dsn, workdir)
            node.accounts = asyncio.run(populate(url, transfers=transfers))
            yield node
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="package")
def node(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One served, populated ledger shared by the tests that only read it."""
    yield from _node(postgres_server, tmp_path_factory.mktemp("node"), "audit_shared_node")


@pytest.fixture
def own_node(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Node]:
    """A served, populated ledger of this test's own, for tests that tamper with the database."""
    yield from _node(postgres_server, tmp_path, "audit_own_node", transfers=280)


@pytest.fixture(scope="package")
def exported(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared node's log, exported once with `timebank export` (tests copy it before changing it)."""
    directory = tmp_path_factory.mktemp("exported") / "log"
    assert main(["export", node.url, str(directory), "--quiet"]) == 0
    return directory
