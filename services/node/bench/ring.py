"""``timebank bench ring``: N networks in a ring on this machine, traded with until they reach a steady state.

Each network has its own database (one PostgreSQL cluster for all), its own NATS server with JetStream in its own
domain, and its own `timebank serve` process, peered with its two ring neighbours as ``timebank bench federation``
peers its two (trust limits, witness keys, the credentials each issued the other). Members pay members of both
neighbours, a few of them to accounts that do not exist there (rejected, then reversed), and the bench waits for the
steady state that ``services/node/bench/steady.py`` reads from the public and status APIs. It prints the time to
start, the time to the steady state, the trades made, and the memory the ring took (peak and at the steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.node.bench import memory
from services.node.bench.networks import TOKENS, Network, network, node_config
from services.node.bench.steady import Ring, RingFailed, linked, steady
from services.node.benchdb import bench_databases
from services.node.processes import ServerProcess, server_tempdir

MEMBERS = 4  # members per network who pay and are paid
CONCURRENCY = 32  # payments in the air at once, over the whole ring
SAMPLE_SECONDS = 0.5
CONNECTIONS = 180  # of the private cluster's 200, for the nodes (the rest: the bench and the audit)

T = TypeVar("T")


class NodeProcess(ServerProcess):
    """`timebank serve` for one network, supervised as the servers are: in its own session, stopped at exit, and
    sent SIGTERM by the kernel if the bench dies without stopping it."""

    _stop_steps = ((signal.SIGTERM, 30.0),)

    def __init__(self, config: Path, log: Path) -> None:
        super().__init__(log)
        self.config = config

    def launch(self) -> None:
        """Start serving; `ready` says when it answers."""
        self._launch([sys.executable, "-m", "services.node.cli", "--config", str(self.config), "serve"], None)


class _AskingAgain(httpx.AsyncHTTPTransport):
    """Sends a request again when the node closed its kept-alive connection just as the request went out on it
    (uvicorn closes idle ones after 5 s). Safe: every write the bench makes carries an idempotency key."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(2):
            try:
                return await super().handle_async_request(request)
            except httpx.RemoteProtocolError:
                continue
        return await super().handle_async_request(request)


@dataclass(frozen=True)
class Trades:
    """The payments made around the ring."""

    accepted: int  # to members of the neighbour
    rejected: int  # to accounts the neighbour does not have: rejected there and reversed here
    seconds: float  # from the first payment until the last was committed


def _pool_size(count: int) -> int:
    """Connections per pool (a node has three: ledger, exchange, federation) that keep ``count`` nodes within the
    private cluster's 200 connections: 4 up to 15 networks, never under 2 (the services' minimum)."""
    return max(2, min(4, CONNECTIONS // (3 * count)))


def _names(count: int) -> list[str]:
    return [f"ring{i:02d}" for i in range(count)]


@contextmanager
def _nats_servers(nets: list[Network]) -> Iterator[None]:
    try:
        for net in nets:
            net.nats.start()
        yield
    finally:
        for net in nets:
            net.nats.stop()


@asynccontextmanager
async def _nodes(ring: Ring, nodes: list[NodeProcess]) -> AsyncIterator[None]:
    """Start every network's node, wait until each answers, and stop them all (at once) when the block ends."""
    try:
        for node in nodes:
            node.launch()
        for net, node, http in zip(ring.nets, nodes, ring.clients, strict=True):
            deadline = time.monotonic() + 300
            while True:
                if not node.running:
                    raise RingFailed(f"{net.name}'s node exited while starting:\n{node.log_tail()}")
                try:
                    if (await http.get("/ledger/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RingFailed(f"{net.name}'s node did not start:\n{node.log_tail()}")
                await asyncio.sleep(0.2)
        yield
    finally:
        for node in nodes:
            if node.running and node.pid is not None:
                os.kill(node.pid, signal.SIGTERM)  # all at once, then reap each: ten stops in parallel
        for node in nodes:
            node.stop()


async def _watching(ring: Ring, nodes: list[NodeProcess], work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, unless a node exits first (or while ``work`` fails, as it will when a node it asks is
    gone): then fail naming that node, with the end of its log."""
    task = asyncio.create_task(work)
    try:
        while True:
            await asyncio.wait({task}, timeout=1)
            for net, node in zip(ring.nets, nodes, strict=True):
                if not node.running:
                    raise RingFailed(f"{net.name}'s node exited; its log ends:\n{node.log_tail()}")
            if task.done():
                return task.result()
    finally:
        task.cancel()


async def _sampling(kinds: dict[str, memory.Kind], peaks: memory.Peaks) -> None:
    while True:
        peaks.add(await asyncio.to_thread(memory.sample, kinds))
        await asyncio.sleep(SAMPLE_SECONDS)


async def _trade(ring: Ring, per_link: int) -> Trades:
    """``per_link`` payments each way over each link of the ring, and one each way to an account the payee's
    network does not have; with CONCURRENCY in the air at once."""
    coordinator = {"Authorization": f"Bearer {TOKENS['coordinator']}"}
    service = {"Authorization": f"Bearer {TOKENS['service']}"}
    members: list[list[str]] = []
    for http in ring.clients:
        opened = []
        for m in range(MEMBERS):
            r = await http.post("/ledger/accounts", json={"key": f"member-{m}"}, headers=coordinator)
            r.raise_for_status()
            opened.append(str(r.json()["id"]))
        members.append(opened)
    payments: list[tuple[int, dict[str, object]]] = []
    for a in range(len(ring.nets)):
        for payer, payee in ((a, ring.right(a)), (ring.right(a), a)):
            clearing = ring.clearing[payer][ring.nets[payee].origin]
            for k in range(per_link + 1):
                remote = members[payee][k % MEMBERS] if k < per_link else "acct_" + os.urandom(10).hex()
                body = {
                    "key": f"pay-{ring.nets[payee].name}-{k}",
                    "payer": members[payer][k % MEMBERS],
                    "payee": clearing,
                    "minutes": 1 + k % 3,
                    "remote_payee": remote,
                }
                payments.append((payer, body))
    gate = asyncio.Semaphore(CONCURRENCY)

    async def pay(payer: int, body: dict[str, object]) -> None:
        async with gate:
            r = await ring.clients[payer].post("/ledger/transfers", json=body, headers=service)
        if r.status_code != 201:
            raise RingFailed(f"a payment in {ring.nets[payer].name} was refused: {r.status_code} {r.text[:200]}")

    t0 = time.perf_counter()
    await asyncio.gather(*(pay(payer, body) for payer, body in payments))
    links = 2 * len(ring.nets)
    return Trades(accepted=links * per_link, rejected=links, seconds=time.perf_counter() - t0)


async def _audit_pair(ring: Ring, root: Path) -> tuple[bool, str]:
    """``timebank audit`` of the first network with its right neighbour's log, as an outside auditor runs it:
    every check, both neighbours' cosignatures, and the pairing of the two logs' cross-network transfers."""
    a, b = ring.nets[0], ring.nets[1]
    report = root / "audit.json"
    argv = [
        sys.executable, "-m", "services.node.cli", "audit", f"{a.url}/ledger", "--vkey", a.signer.verifier().to_text(),
        "--witness", ring.nets[ring.left(0)].witness.verifier().to_text(), "--witness", b.witness.verifier().to_text(),
        "--neighbour", f"{b.url}/ledger", "--neighbour-vkey", b.signer.verifier().to_text(),
        "--no-state", "--no-cache", "--quiet", "--jobs", "1", "--json", str(report),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if not report.exists():
        return False, f"could not run (exit {proc.returncode}): {out.decode(errors='replace')[-400:]}"
    found = json.loads(report.read_bytes())
    checks = {c["id"]: c for c in found["checks"]}
    failed = sorted(c["id"] for c in found["checks"] if c["status"] == "fail")
    passed = proc.returncode == 0 and bool(found["ok"])
    pairing = checks.get("federation.pairing", {}).get("detail", "no pairing check")
    return passed, ("pass" if passed else "FAIL (" + ", ".join(failed) + ")") + f"; pairing: {pairing}"


def _print_memory(peaks: memory.Peaks, now: memory.Sample) -> None:
    """RSS as asked of a process monitor, and PSS: what the ring holds, each shared page counted once in all."""
    print(f"{'memory':<30} {'RSS peak':>10} {'RSS steady':>11} {'PSS peak':>10} {'PSS steady':>11}")
    rows = [(f"{kind} ({now.processes[kind]} processes)", kind) for kind in now.rss]
    for label, kind in [*rows, ("total", "total")]:
        rss = sum(now.rss.values()) if kind == "total" else now.rss[kind]
        pss = sum(now.pss.values()) if kind == "total" else now.pss[kind]
        print(f"  {label:<28} {memory.mib(peaks.rss[kind]):>10} {memory.mib(rss):>11} "
              f"{memory.mib(peaks.pss[kind]):>10} {memory.mib(pss):>11}")  # fmt: skip
    print("  (RSS sums count a page that processes share, such as PostgreSQL's shared buffers, once per process;")
    print("   PSS divides it among them; a kind's peak and the total's need not be at the same moment)")


async def _main(args: argparse.Namespace, root: Path) -> int:
    count: int = args.networks
    names = _names(count)
    print(f"ring of {count} networks on {os.cpu_count()} CPUs", flush=True)
    t0 = time.perf_counter()
    async with AsyncExitStack() as stack:
        dbs = await stack.enter_async_context(
            bench_databases(args.database_url, root, *(f"timebank_bench_{name}" for name in names))
        )
        t_postgres = time.perf_counter()
        nets = [
            network(name, url, root, names[(i - 1) % count], names[(i + 1) % count])
            for i, (name, url) in enumerate(zip(names, dbs.urls, strict=True))
        ]
        stack.enter_context(_nats_servers(nets))
        t_nats = time.perf_counter()
        pool = _pool_size(count)
        nodes = [
            NodeProcess(node_config(net, nets[(i - 1) % count], nets[(i + 1) % count], max_pool=pool),
                        net.workdir / "node.log")
            for i, net in enumerate(nets)
        ]  # fmt: skip
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=net.url, timeout=60, trust_env=False, transport=_AskingAgain())
            )
            for net in nets
        ]
        ring = Ring(nets, clients)
        kinds: dict[str, memory.Kind] = {
            "nodes": lambda: [n.pid for n in nodes if n.pid is not None],
            "nats-servers": lambda: [n.nats.pid for n in nets if n.nats.pid is not None],
        }
        if dbs.postmaster is not None:
            postmaster = dbs.postmaster
            kinds["postgresql"] = lambda: [postmaster, *memory.children(postmaster)]
        peaks = memory.Peaks()
        sampler = asyncio.create_task(_sampling(kinds, peaks))
        stack.callback(sampler.cancel)
        await stack.enter_async_context(_nodes(ring, nodes))
        t_nodes = time.perf_counter()
        await linked(ring, within=300)
        t_linked = time.perf_counter()
        print(f"started in {t_linked - t0:.1f} s: PostgreSQL and {count} databases {t_postgres - t0:.1f} s, "
              f"{count} NATS servers {t_nats - t_postgres:.1f} s, {count} nodes serving {t_nodes - t_nats:.1f} s, "
              f"every link up {t_linked - t_nodes:.1f} s", flush=True)  # fmt: skip

        trades = await _watching(ring, nodes, _trade(ring, args.per_link))
        t_traded = time.perf_counter()
        print(f"trades: {trades.accepted + trades.rejected:,} payments over {count} links in {trades.seconds:.1f} s "
              f"({trades.accepted:,} to neighbours' members, {trades.rejected} to accounts they do not have)",
              flush=True)  # fmt: skip
        state = await _watching(ring, nodes, steady(ring, within=args.steady_within))
        t_steady = time.perf_counter()
        at_steady = memory.sample(kinds)
        peaks.add(at_steady)
        print(f"steady state {t_steady - t_traded:.1f} s after the last payment "
              f"({t_steady - t_traded + trades.seconds:.1f} s after the first; {t_steady - t0:.1f} s from the start): "
              f"{state}", flush=True)  # fmt: skip
        audited, audit = await _audit_pair(ring, root)
        print(f"audit of {ring.nets[0].name} with {ring.nets[1].name}'s log: {audit}")
        _print_memory(peaks, at_steady)
    return 0 if audited else 1


def run(args: argparse.Namespace) -> int:
    if args.networks < 3:
        raise SystemExit("timebank bench ring: a ring needs at least 3 networks")
    root = server_tempdir("timebank-bench-ring-")
    try:
        return asyncio.run(_main(args, root))
    except RingFailed as exc:
        print(f"timebank bench ring: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every node and server of the ring is stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
