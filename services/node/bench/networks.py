"""Networks for the federation benchmarks (``timebank bench federation`` and ``ring``): each with its keys, database,
NATS server (its own JetStream domain) and ``timebank serve`` process, peered with the networks named, and the
status reads the benchmarks wait on."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from services.federation import access
from services.node.nats import NatsServer
from services.node.processes import LOCALHOST, free_port
from shared.note import CosignatureSigner, Signer, write_signer_key

TOKENS = {role: f"bench-{role}-token" for role in ("service", "coordinator", "auditor", "federation")}
LOCAL_USER = "timebank"
CHECKPOINT_EVERY = 1000
PAYERS = 64


@dataclass
class Network:
    """One benchmarked network: its keys, database, NATS server and node process."""

    name: str
    database_url: str
    workdir: Path
    signer: Signer
    witness: CosignatureSigner
    nats: NatsServer
    issued: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def peer_entry(self, of: Network) -> dict[str, object]:
        """How the network ``of`` configures this one."""
        return {
            "origin": self.origin,
            "log_key": self.signer.verifier().to_text(),
            "witness_key": self.witness.verifier().to_text(),
            "nats_url": self.nats.url,
            "nats_user": access.peer_user(of.name),
            "nats_password": self.issued[of.name],
            "issued_password": of.issued[self.name],
            "trust_limit": 10**9,
        }


def network(name: str, database_url: str, root: Path, *neighbours: str) -> Network:
    """A network's keys, NATS server (admitting our services and each neighbour by the password issued to it) and
    port, under ``root / name``; nothing started yet."""
    workdir = root / name
    workdir.mkdir(parents=True)
    signer = Signer.generate(f"bench.timebank.local/{name}")
    witness = CosignatureSigner.generate(f"bench.timebank.local/{name}/witness")
    write_signer_key(workdir / "network.key", signer)
    write_signer_key(workdir / "witness.key", witness)
    issued = {other: f"{other}-{os.urandom(8).hex()}" for other in neighbours}
    authorization = workdir / "authorization.conf"
    access.write_authorization(authorization, access.authorization(name, LOCAL_USER, "local-secret", issued))
    server = NatsServer(
        workdir / "nats",
        server_name=f"bench-{name}",
        jetstream_domain=name,
        includes=[authorization],
        pid_file=workdir / "nats.pid",
    )
    return Network(name, database_url, workdir, signer, witness, server, issued, free_port())


def node_config(net: Network, *peers: Network, max_pool: int = 16) -> Path:
    """Write the `timebank serve` configuration of the network, peered with ``peers``; return its path."""
    settings = {
        "origin": net.origin,
        "data_dir": str(net.workdir),
        "key_file": str(net.workdir / "network.key"),
        "database": {"url": net.database_url, "max_pool": max_pool},
        "http": {"host": LOCALHOST, "port": net.port},
        "nats": {
            "url": net.nats.url,
            "user": LOCAL_USER,
            "password": "local-secret",
            "authorization_file": str(net.workdir / "authorization.conf"),
            "pid_file": str(net.workdir / "nats.pid"),
        },
        "ledger": {
            "default_floor": -(10**9),
            "tokens": [
                {"name": f"bench-{role}", "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest()}
                for role, token in TOKENS.items()
            ],
        },
        "exchange": {"ledger_token": TOKENS["service"]},
        "federation": {
            "ledger_token": TOKENS["federation"],
            "witness_key_file": str(net.workdir / "witness.key"),
            "peers": [peer.peer_entry(net) for peer in peers],
        },
        "log": {"format": "json", "level": "warning"},
    }
    path = net.workdir / "node.toml"
    path.write_bytes(msgspec.toml.encode(settings))
    return path


@asynccontextmanager
async def serving(net: Network, peer: Network) -> AsyncIterator[None]:
    """`timebank serve` for the network (ledger, exchange, federation) until the block ends."""
    config = node_config(net, peer)
    log = (net.workdir / "node.log").open("ab")
    net.proc = subprocess.Popen(  # noqa: ASYNC220 - starting a process is quick
        [sys.executable, "-m", "services.node.cli", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with httpx.AsyncClient(base_url=net.url, timeout=10) as http:
            deadline = time.monotonic() + 120
            while True:
                if net.proc.poll() is not None:
                    raise SystemExit(f"{net.name}'s node exited: see {net.workdir / 'node.log'}")
                try:
                    if (await http.get("/ledger/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{net.name}'s node did not start: see {net.workdir / 'node.log'}")
                await asyncio.sleep(0.1)
        yield
    finally:
        net.proc.terminate()
        try:
            net.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            net.proc.kill()
        log.close()


async def status(http: httpx.AsyncClient) -> dict[str, object]:
    r = await http.get("/federation/status", headers={"Authorization": f"Bearer {TOKENS['auditor']}"})
    r.raise_for_status()
    return dict(r.json())


async def peer_field(http: httpx.AsyncClient, field: str) -> int:
    peers = (await status(http))["peers"]
    assert isinstance(peers, list)
    return int(peers[0][field]) if peers else 0


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 1800.0) -> float:
    """Seconds until ``check`` holds (polled every 100 ms: the status it reads costs the node some work)."""
    t0 = time.perf_counter()
    while not await check():
        if time.perf_counter() - t0 > within:
            raise SystemExit(f"timebank bench: timed out waiting until {what}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0
