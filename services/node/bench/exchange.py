"""``timebank bench exchange``: search latency and end-to-end exchanges per second over HTTP, on a loaded network.

The network (members with ledger accounts, listings with varied texts) is loaded in bulk (``exchange_load``); a real
``timebank serve`` process (exchange at ``/``, ledger at ``/ledger``) then answers every measured request
(``exchange_phases``), and ``exchange_report`` prints what they measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import uvloop

from services.ledger.client import LedgerClient
from services.node.bench.exchange_load import SERVICE_TOKEN, load, sign_in_check
from services.node.bench.exchange_phases import exchange_phase, search_phase
from services.node.bench.exchange_report import print_report
from services.node.benchdb import bench_databases
from services.node.processes import free_port, server_tempdir
from shared.note import Signer, write_signer_key

ORIGIN = "bench.timebank.local/exchange"
COORDINATOR_TOKEN = "bench-coordinator-token"
# The network's credit limit for the run: members may owe up to 10,000 hours, so no exchange is refused.
FLOOR = -600_000
SEARCH_CLIENTS = 4


# ---- The node under test ----


class CpuMeter:
    """CPU seconds used by the node process and by the PostgreSQL cluster (its postmaster and backends), read
    from /proc: on a shared machine the cost per operation says more than the rate. Zero where /proc is not."""

    def __init__(self, node: int, postmaster: int | None) -> None:
        self.node = node
        self.postmaster = postmaster

    @staticmethod
    def _stat(pid: int, reaped: bool = False) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
        return ticks / os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float]:
        database = 0.0
        if self.postmaster is not None:
            database = self._stat(self.postmaster, reaped=True)
            try:
                children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
            except OSError:
                children = []
            database += sum(self._stat(int(child)) for child in children)
        return self._stat(self.node), database


def _config(workdir: Path, url: str, port: int) -> Path:
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    path = workdir / "bench-exchange.toml"
    path.write_text(
        f'origin = "{ORIGIN}"\nkey_file = "{workdir / "network.key"}"\n'
        f'[database]\nurl = "{url}"\n[http]\nport = {port}\n'
        f"[ledger]\ndefault_floor = {FLOOR}\n"
        f'[[ledger.tokens]]\nname = "bench-service"\nrole = "service"\nsha256 = "{digest(SERVICE_TOKEN)}"\n'
        f'[[ledger.tokens]]\nname = "bench-coordinator"\nrole = "coordinator"\nsha256 = "{digest(COORDINATOR_TOKEN)}"\n'
        f'[exchange]\nledger_token = "{SERVICE_TOKEN}"\n'
    )
    return path


async def _wait_ready(base: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        for _ in range(600):
            if proc.returncode is not None:
                raise RuntimeError("timebank serve exited during start-up")
            try:
                r1, r2 = await http.get(base + "/ready"), await http.get(base + "/ledger/ready")
                if r1.status_code == r2.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("timebank serve did not become ready")


# ---- The run ----


async def _main(args: argparse.Namespace, root: Path) -> None:
    async with bench_databases(args.database_url, root, "timebank_bench_exchange") as databases:
        await _measure(args, root, databases.urls[0], databases.postmaster)


async def _measure(args: argparse.Namespace, root: Path, url: str, postmaster: int | None) -> None:
    proc = None
    try:
        write_signer_key(root / "network.key", Signer.generate(ORIGIN))
        conn = await asyncpg.connect(url)  # the node migrates both schemas as it starts
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.node.cli",
            "--config",
            str(_config(root, url, port)),
            "serve",
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        await _wait_ready(base, proc)
        print(f"{os.cpu_count()} CPUs; loading {args.members:,} members and {args.listings:,} listings ...", flush=True)
        t0 = time.perf_counter()
        async with LedgerClient(base + "/ledger", SERVICE_TOKEN) as ledger:
            network = await load(conn, ledger, args.members, args.listings, seed=1)
        print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
        await sign_in_check(base, network)

        meter = CpuMeter(proc.pid, postmaster)
        print(f"searching: {args.searches:,} searches from {SEARCH_CLIENTS} clients ...", flush=True)
        before = meter.read()
        search, per_page = await search_phase(base, args.searches, SEARCH_CLIENTS, seed=2)
        search_cpu = [(b - a) / search.count for a, b in zip(before, meter.read(), strict=True)]
        warmup = min(1000, max(100, args.exchanges // 5))
        print(f"warming up: {warmup:,} exchanges (not measured), then ANALYZE as autovacuum would ...", flush=True)
        await exchange_phase(base, conn, network, warmup, args.clients, seed=4)
        await conn.execute("ANALYZE")
        print(f"exchanging: {args.exchanges:,} exchanges from {args.clients} clients ...", flush=True)
        before = meter.read()
        exchanges, steps = await exchange_phase(base, conn, network, args.exchanges, args.clients, seed=3)
        exchange_cpu = [(b - a) / exchanges.count for a, b in zip(before, meter.read(), strict=True)]
        await conn.close()

        cpu = {"search": search_cpu, "exchange": exchange_cpu}
        print_report(search, per_page, exchanges, steps, cpu, database_measured=postmaster is not None)
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()


def run(args: argparse.Namespace) -> int:
    root = server_tempdir("timebank-bench-")
    try:
        uvloop.run(_main(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
