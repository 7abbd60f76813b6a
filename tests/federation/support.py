"""Networks for federation tests: each with its own database, its own nats-server, a ledger and a federation."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import uvicorn

from services.federation import access
from services.federation.app import create_app as create_federation
from services.federation.names import network_name
from services.ledger.app import create_app as create_ledger
from services.node.compose import IN_PROCESS_LEDGER, Node
from services.node.nats import NatsServer
from services.node.processes import LOCALHOST, free_port
from shared.note import CosignatureSigner, Signer
from shared.settings import ApiToken, FederationSettings, LedgerSettings, NatsSettings, PeerSettings, Settings
from tests.serving import InLoopServer, started

LOCAL_USER = "timebank"
TOKENS = {"service": "svc-secret", "coordinator": "coord-secret", "auditor": "audit-secret", "federation": "fed-secret"}


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@dataclass
class Network:
    """One network's identity and servers; ``ledger`` and ``federation`` are set while it runs."""

    origin: str
    signer: Signer
    witness: CosignatureSigner
    database_url: str
    nats: NatsServer
    # Our services' password on our NATS server, and the passwords we issued neighbours there (by NATS name).
    nats_password: str
    issued: dict[str, str]
    authorization_file: Path
    pid_file: Path
    peers: list[PeerSettings] = field(default_factory=list)
    # The running node (ledger at /ledger, federation at /federation), while it runs; ``url`` when it is served
    # on a socket (tests/federation/faults.py), for clients outside this event loop such as the auditor.
    client: httpx.AsyncClient | None = None
    url: str | None = None

    @property
    def name(self) -> str:
        return network_name(self.origin)

    def as_peer(self, of: Network, **changes: object) -> PeerSettings:
        """How the neighbour ``of`` configures this network (with the credential this network issued it)."""
        fields: dict[str, object] = {
            "origin": self.origin,
            "log_key": self.signer.verifier().to_text(),
            "witness_key": self.witness.verifier().to_text(),
            "nats_url": self.nats.url,
            "nats_user": access.peer_user(of.name),
            "nats_password": self.issued[of.name],
            "issued_password": of.issued[self.name],
            "trust_limit": 600,
        }
        fields.update(changes)
        return PeerSettings(**fields)  # type: ignore[arg-type]

    def settings(self) -> Settings:
        return Settings(
            origin=self.origin,
            nats=NatsSettings(
                url=self.nats.url,
                user=LOCAL_USER,
                password=self.nats_password,
                authorization_file=str(self.authorization_file),
                pid_file=str(self.pid_file),
            ),
            ledger=LedgerSettings(
                tokens=[
                    ApiToken(name=role, role=role, sha256=hashlib.sha256(t.encode()).hexdigest())  # type: ignore[arg-type]
                    for role, t in TOKENS.items()
                ]
            ),
            federation=FederationSettings(peers=self.peers, ledger_token=TOKENS["federation"], poll_seconds=0.5),
        )

    async def transfers(self, count: int, tag: str) -> None:
        """Open two member accounts and move minutes between them ``count`` times, concurrently."""
        assert self.client is not None
        accounts = []
        for who in ("payer", "payee"):
            r = await self.client.post("/ledger/accounts", json={"key": f"{tag}-{who}"}, headers=auth("coordinator"))
            assert r.status_code == 201, r.text
            accounts.append(r.json()["id"])
        replies = await asyncio.gather(
            *(
                self.client.post(
                    "/ledger/transfers",
                    json={"key": f"{tag}-{n}", "payer": accounts[0], "payee": accounts[1], "minutes": 1},
                    headers=auth("service"),
                )
                for n in range(count)
            )
        )
        assert {r.status_code for r in replies} == {201}

    async def open_member(self, key: str) -> str:
        assert self.client is not None
        r = await self.client.post("/ledger/accounts", json={"key": key}, headers=auth("coordinator"))
        assert r.status_code in (200, 201), r.text
        return str(r.json()["id"])

    async def balance(self, account: str) -> int:
        assert self.client is not None
        r = await self.client.get(f"/ledger/accounts/{account}", headers=auth("auditor"))
        assert r.status_code == 200, r.text
        return int(r.json()["balance"])

    async def status(self) -> dict[str, Any]:
        assert self.client is not None
        r = await self.client.get("/federation/status", headers=auth("auditor"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def clearing_account(self, origin: str) -> str:
        """The clearing account of the neighbour ``origin`` in our ledger, once the federation has linked it."""
        found: list[str] = []

        async def linked() -> bool:
            peers = (await self.status())["peers"]
            found[:] = [p["clearing_account"] for p in peers if p["origin"] == origin and p["clearing_account"]]
            return bool(found)

        await eventually(linked, f"{self.origin} links {origin}")
        return found[0]

    async def pay_remote(self, key: str, payer: str, neighbour: Network, payee: str, minutes: int) -> dict[str, Any]:
        """Have ``payer`` pay ``payee``, a member of ``neighbour``, through its clearing account here."""
        assert self.client is not None
        clearing = await self.clearing_account(neighbour.origin)
        body = {"key": key, "payer": payer, "payee": clearing, "minutes": minutes, "remote_payee": payee}
        r = await self.client.post("/ledger/transfers", json=body, headers=auth("service"))
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def log_size(self) -> int:
        assert self.client is not None
        r = await self.client.get("/ledger/ready")
        return int(r.json()["log_size"])


def node_app(net: Network, *, federation: bool = True) -> Node:
    """The network's node as ``timebank serve`` wires it: its ledger at /ledger and (unless ``federation`` is
    False) its federation at /federation, which reaches the ledger in process."""
    settings = net.settings()
    ledger = create_ledger(settings, database_url=net.database_url, signer=net.signer)
    if not federation:
        return Node({"/ledger": ledger})
    fed = create_federation(
        settings,
        database_url=net.database_url,
        ledger_url=IN_PROCESS_LEDGER,
        ledger_transport=httpx.ASGITransport(app=cast("Any", ledger)),
        witness_signer=net.witness,
    )
    return Node({"/ledger": ledger, "/federation": fed})


@asynccontextmanager
async def served(net: Network, *, federation: bool = True, app: Node | None = None) -> AsyncIterator[None]:
    """Serve the network's node (or only its ledger; or ``app``, built already) on a loopback port, with uvicorn in
    this event loop, until the block ends; ``net.client`` and ``net.url`` reach it meanwhile."""
    port = free_port()
    config = uvicorn.Config(
        cast("Any", app or node_app(net, federation=federation)),
        host=LOCALHOST,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        lifespan="on",
        loop="asyncio",
    )
    server = InLoopServer(config)
    task = asyncio.create_task(server.serve(), name=f"serving {net.name}")
    try:
        await eventually(lambda: started(server, task), f"{net.name}'s node starts", within=60)
        net.url = f"http://{LOCALHOST}:{port}"
        async with httpx.AsyncClient(base_url=net.url, timeout=60, trust_env=False) as client:
            net.client = client
            yield
    finally:
        net.client = None
        net.url = None
        server.should_exit = True
        await task


@asynccontextmanager
async def running(*networks: Network) -> AsyncIterator[None]:
    """Run every network's ledger and federation, wired as ``timebank serve`` wires them, each on its own database
    and NATS server, served on loopback in this event loop (no test-client threads)."""
    # Every app is built before any starts: building a Litestar app retries a failing optional import, which is
    # best not done while other apps run.
    nodes = [node_app(net) for net in networks]
    async with AsyncExitStack() as stack:
        for net, node in zip(networks, nodes, strict=True):
            await stack.enter_async_context(served(net, app=node))
        yield


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30.0) -> None:
    """Wait until ``check`` holds; fail naming ``what`` if it does not within ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)
