"""``timebank bench federation``: two networks on this machine, each with its own database, NATS server and node.

It measures, in one run:

- replication: entries per second from riverside's committed log into hillside's verified copy, for a backlog
  (the log built before either node starts, with a checkpoint every 1,000 entries as batches leave them) and in
  steady state (while riverside's members trade); beside it, the ceiling on the same bytes: bare JetStream
  publish and fetch of the same batches plus SHA-256 leaf hashing;
- cross-network trades with 64 concurrent payers: trades per second, and the latency from the payer's commit until
  hillside's decision is in riverside's copy of hillside's log;
- witnessing: the time from a new checkpoint until hillside's cosignature of it is served with it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats

from services.federation import access, wire
from services.federation.publisher import split
from services.node.bench.ledger import grow_log
from services.node.bench.loadgen import LoadClient
from services.node.benchdb import bench_databases
from services.node.nats import NatsServer
from services.node.processes import LOCALHOST, free_port, server_tempdir
from shared import merkle
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
async def _serving(net: Network, peer: Network) -> AsyncIterator[None]:
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


async def _status(http: httpx.AsyncClient) -> dict[str, object]:
    r = await http.get("/federation/status", headers={"Authorization": f"Bearer {TOKENS['auditor']}"})
    r.raise_for_status()
    return dict(r.json())


async def _peer_field(http: httpx.AsyncClient, field: str) -> int:
    peers = (await _status(http))["peers"]
    assert isinstance(peers, list)
    return int(peers[0][field]) if peers else 0


async def _until(check: Callable[[], Awaitable[bool]], what: str, within: float = 1800.0) -> float:
    """Seconds until ``check`` holds (polled every 100 ms: the status it reads costs the node some work)."""
    t0 = time.perf_counter()
    while not await check():
        if time.perf_counter() - t0 > within:
            raise SystemExit(f"timebank bench: timed out waiting until {what}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


async def _ceiling(net: Network, size: int) -> tuple[float, float]:
    """Seconds to publish and fetch the log's batches through a bare JetStream stream, and to hash its leaves."""
    conn = await asyncpg.connect(net.database_url)
    try:
        rows = await conn.fetch("SELECT data FROM ledger.entries ORDER BY idx")
    finally:
        await conn.close()
    entries = [bytes(r["data"]) for r in rows]
    assert len(entries) == size
    batches = [
        wire.encoder.encode(batch)
        for start in range(0, size, CHECKPOINT_EVERY)
        for batch in split(start, entries[start : start + CHECKPOINT_EVERY], b"", net.origin)
    ]
    t0 = time.perf_counter()
    for data in entries:
        merkle.leaf_hash(data)
    hashing = time.perf_counter() - t0
    nc = await nats.connect(net.nats.url, user=LOCAL_USER, password="local-secret")
    try:
        js = nc.jetstream()
        await js.add_stream(name="bench-ceiling", subjects=["bench.ceiling"])
        t0 = time.perf_counter()
        acks = [await js.publish_async("bench.ceiling", data) for data in batches]
        await asyncio.gather(*acks)
        sub = await js.pull_subscribe("bench.ceiling", durable="bench")
        got = 0
        while got < len(batches):
            msgs = await sub.fetch(256, timeout=5)
            for msg in msgs:
                wire.decoder.decode(msg.data)
            got += len(msgs)
            await asyncio.gather(*(msg.ack() for msg in msgs))
        transport = time.perf_counter() - t0
        await js.delete_stream("bench-ceiling")
    finally:
        await nc.close()
    return transport, hashing


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:,.0f} ms"


async def _trades(river: Network, hill: Network, count: int) -> tuple[float, list[float], Hops]:
    """``count`` payments by PAYERS concurrent payers in riverside to members of hillside; the seconds from the
    first commit until riverside's copy of hillside's log holds every decision, and each payment's latency."""
    headers = f"Authorization: Bearer {TOKENS['service']}\r\nContent-Type: application/json\r\n".encode()
    coordinator = {"Authorization": f"Bearer {TOKENS['coordinator']}"}
    async with (
        httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp,
        httpx.AsyncClient(base_url=hill.url, timeout=30) as hhttp,
    ):
        payers = [
            (await rhttp.post("/ledger/accounts", json={"key": f"payer-{i}"}, headers=coordinator)).json()["id"]
            for i in range(PAYERS)
        ]
        payees = [
            (await hhttp.post("/ledger/accounts", json={"key": f"payee-{i}"}, headers=coordinator)).json()["id"]
            for i in range(PAYERS)
        ]
        clearing_found: list[str] = []

        async def linked() -> bool:
            peers = (await _status(rhttp))["peers"]
            assert isinstance(peers, list)
            clearing_found[:] = [p["clearing_account"] for p in peers if p["clearing_account"]]
            return bool(clearing_found)

        await _until(linked, "riverside links hillside")
        clearing = clearing_found[0]
    committed: dict[str, float] = {}
    per_payer = count // PAYERS

    async def pay(i: int) -> None:
        client = LoadClient(LOCALHOST, river.port)
        try:
            for n in range(per_payer):
                body = msgspec.json.encode(
                    {"key": f"trade-{i}-{n}", "payer": payers[i], "payee": clearing, "minutes": 1,
                     "remote_payee": payees[(i + n) % PAYERS]}
                )  # fmt: skip
                status, data = await client.post("/ledger/transfers", headers, body)
                if status != 201:
                    raise SystemExit(f"a payment was refused: {status} {data[:200]!r}")
                committed[msgspec.json.decode(data)["id"]] = time.time()
        finally:
            client.close()

    t0 = time.time()
    await asyncio.gather(*(pay(i) for i in range(PAYERS)))
    async with httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp:

        async def answered() -> bool:
            peers = (await _status(rhttp))["peers"]
            assert isinstance(peers, list)
            return int(peers[0]["in_flight_out"]["payments"]) == 0

        await _until(answered, "hillside's decisions reach riverside")
    conn = await asyncpg.connect(river.database_url)
    try:
        rows = await conn.fetch(
            "SELECT transfer, extract(epoch FROM seen_at) AS at FROM federation.crossnet WHERE kind = 'accepted'"
        )
    finally:
        await conn.close()
    seen = {r["transfer"]: float(r["at"]) for r in rows}
    latencies = [seen[t] - at for t, at in committed.items() if t in seen]
    conn = await asyncpg.connect(hill.database_url)
    try:
        rows = await conn.fetch(
            """SELECT key, extract(epoch FROM created_at) AS queued, extract(epoch FROM done_at) AS done
               FROM federation.outbox WHERE kind = 'federation.settle.decide.v1'"""
        )
    finally:
        await conn.close()
    prefix = f"decide {river.origin} "
    settled = {r["key"].removeprefix(prefix): (float(r["queued"]), float(r["done"])) for r in rows if r["done"]}
    hops = Hops([], [], [])
    for t, at in committed.items():
        if t in seen and t in settled:
            queued, done = settled[t]
            hops.replicated.append(queued - at)
            hops.decided.append(done - queued)
            hops.answered.append(seen[t] - done)
    return max(seen.values()) - t0, latencies, hops


@dataclass
class Hops:
    """Where a cross-network trade's latency goes: the payer's commit until hillside queued the decision (publish and
    replicate), until hillside's ledger decided it (settle), until the decision is in riverside's copy (answer)."""

    replicated: list[float]
    decided: list[float]
    answered: list[float]


async def _cosign_latencies(net: Network, since: float) -> list[float]:
    """For each checkpoint the network signed after ``since`` (POSIX time) that a witness cosigned: seconds from
    signing to the cosignature being stored, and so served (the backlog's checkpoints, signed before either node
    ran, are left out)."""
    conn = await asyncpg.connect(net.database_url)
    try:
        rows = await conn.fetch(
            """SELECT extract(epoch FROM min(w.added_at) - c.created_at) AS wait
               FROM ledger.checkpoints c JOIN ledger.cosignatures w USING (size)
               WHERE c.created_at > to_timestamp($1) GROUP BY c.size, c.created_at""",
            since,
        )
    finally:
        await conn.close()
    return [float(r["wait"]) for r in rows]


async def _main(args: argparse.Namespace, root: Path) -> None:
    size: int = args.backlog
    async with AsyncExitStack() as stack:
        dbs = await stack.enter_async_context(
            bench_databases(args.database_url, root, "timebank_bench_riverside", "timebank_bench_hillside")
        )
        river = network("riverside", dbs.urls[0], root, "hillside")
        hill = network("hillside", dbs.urls[1], root, "riverside")
        for net in (river, hill):
            net.nats.start()
            stack.callback(net.nats.stop)
        print(f"{os.cpu_count()} CPUs; building riverside's {size:,}-entry log ...", flush=True)
        await grow_log(river.database_url, river.signer, size, checkpoint_every=CHECKPOINT_EVERY)
        transport, hashing = await _ceiling(river, size)
        ceiling = size / (transport + hashing)

        await stack.enter_async_context(_serving(river, hill))
        t0 = time.perf_counter()
        await stack.enter_async_context(_serving(hill, river))
        async with (
            httpx.AsyncClient(base_url=hill.url, timeout=30) as hhttp,
            httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp,
        ):
            published_in: list[float] = []

            async def copied() -> bool:
                if not published_in and int((await _status(rhttp))["published_size"]) >= size:  # type: ignore[call-overload]
                    published_in.append(time.perf_counter() - t0)
                return await _peer_field(hhttp, "replicated_size") >= size

            await _until(copied, "hillside holds riverside's backlog")
            backlog = time.perf_counter() - t0
            published = int((await _status(rhttp))["published_size"])  # type: ignore[call-overload]

        trading_from = time.time()
        trade_seconds, latencies, hops = await _trades(river, hill, args.trades)
        async with httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp:
            ready = (await rhttp.get("/ledger/ready")).json()
        steady_size = int(ready["log_size"])
        async with httpx.AsyncClient(base_url=hill.url, timeout=30) as hhttp:

            async def caught_up() -> bool:
                return await _peer_field(hhttp, "replicated_size") >= steady_size

            await _until(caught_up, "hillside holds riverside's whole log")
        steady = (steady_size - size) / trade_seconds
        cosign = await _cosign_latencies(river, trading_from)

        print()
        print(f"{'replication':<58} {'entries/s':>12} {'seconds':>9}")
        print(f"{'  backlog: riverside log -> hillside verified copy':<58} {size / backlog:>12,.0f} {backlog:>9.1f}")
        print(f"{'  steady state (while trading; = the log growth it kept up with)':<58} {steady:>12,.0f}")
        print(f"{'  ceiling: bare JetStream publish+fetch + SHA-256 leaves':<58} {ceiling:>12,.0f} "
              f"{transport + hashing:>9.1f}")  # fmt: skip
        print(f"{'    of which JetStream / hashing (s)':<58} {'':>12} {transport:>4.1f} / {hashing:.1f}")
        print(f"  backlog rate is {100 * size / backlog / ceiling:.0f}% of the ceiling; published {published:,}"
              + (f" (all of the backlog within {published_in[0]:.1f} s)" if published_in else ""))  # fmt: skip
        print()
        print(f"cross-network trades, {PAYERS} payers: {len(latencies):,} settled in {trade_seconds:.1f} s = "
              f"{len(latencies) / trade_seconds:,.0f}/s; commit -> decision in payer's copy "
              f"p50 {_ms(latencies, 0.5)}, p99 {_ms(latencies, 0.99)}")  # fmt: skip
        print(f"  of which, p50 / p99: commit -> queued in hillside {_ms(hops.replicated, 0.5)} / "
              f"{_ms(hops.replicated, 0.99)}; -> decided {_ms(hops.decided, 0.5)} / {_ms(hops.decided, 0.99)}; "
              f"-> in riverside's copy {_ms(hops.answered, 0.5)} / {_ms(hops.answered, 0.99)}")  # fmt: skip
        print(f"witnessing: checkpoint -> hillside's cosignature served, over {len(cosign):,} cosigned checkpoints: "
              f"p50 {_ms(cosign, 0.5)}, p99 {_ms(cosign, 0.99)}"
              + (f", mean {statistics.fmean(cosign) * 1000:,.0f} ms" if cosign else ""))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    root = server_tempdir("timebank-bench-federation-")
    try:
        asyncio.run(_main(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
