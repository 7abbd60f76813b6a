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
import os
import shutil
import statistics
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import httpx
import nats

from services.federation import wire
from services.federation.publisher import split
from services.node.bench.federation_trades import cosign_latencies, ms, trades
from services.node.bench.ledger import grow_log
from services.node.bench.networks import (
    CHECKPOINT_EVERY,
    LOCAL_USER,
    PAYERS,
    Network,
    network,
    peer_field,
    serving,
    status,
    until,
)
from services.node.benchdb import bench_databases
from services.node.processes import server_tempdir
from shared import merkle


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

        await stack.enter_async_context(serving(river, hill))
        t0 = time.perf_counter()
        await stack.enter_async_context(serving(hill, river))
        async with (
            httpx.AsyncClient(base_url=hill.url, timeout=30) as hhttp,
            httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp,
        ):
            published_in: list[float] = []

            async def copied() -> bool:
                if not published_in and int((await status(rhttp))["published_size"]) >= size:  # type: ignore[call-overload]
                    published_in.append(time.perf_counter() - t0)
                return await peer_field(hhttp, "replicated_size") >= size

            await until(copied, "hillside holds riverside's backlog")
            backlog = time.perf_counter() - t0
            published = int((await status(rhttp))["published_size"])  # type: ignore[call-overload]

        trading_from = time.time()
        trade_seconds, latencies, hops, local_rate = await trades(river, hill, args.trades)
        async with httpx.AsyncClient(base_url=river.url, timeout=30) as rhttp:
            ready = (await rhttp.get("/ledger/ready")).json()
        steady_size = int(ready["log_size"])
        async with httpx.AsyncClient(base_url=hill.url, timeout=30) as hhttp:

            async def caught_up() -> bool:
                return await peer_field(hhttp, "replicated_size") >= steady_size

            await until(caught_up, "hillside holds riverside's whole log")
        # The log's growth while trading across (the local payments before them are left out).
        steady = (steady_size - size - args.trades // PAYERS * PAYERS) / trade_seconds
        cosign = await cosign_latencies(river, trading_from)

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
              f"p50 {ms(latencies, 0.5)}, p99 {ms(latencies, 0.99)}")  # fmt: skip
        rate = len(latencies) / trade_seconds
        print(f"  beside it, the same payers paying each other in riverside: {local_rate:,.0f}/s "
              f"(cross-network {100 * rate / local_rate:.0f}% of that)")  # fmt: skip
        print(f"  of which, p50 / p99: commit -> queued in hillside {ms(hops.replicated, 0.5)} / "
              f"{ms(hops.replicated, 0.99)}; -> decided {ms(hops.decided, 0.5)} / {ms(hops.decided, 0.99)}; "
              f"-> in riverside's copy {ms(hops.answered, 0.5)} / {ms(hops.answered, 0.99)}")  # fmt: skip
        print(f"witnessing: checkpoint -> hillside's cosignature served, over {len(cosign):,} cosigned checkpoints: "
              f"p50 {ms(cosign, 0.5)}, p99 {ms(cosign, 0.99)}"
              + (f", mean {statistics.fmean(cosign) * 1000:,.0f} ms" if cosign else ""))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    root = server_tempdir("timebank-bench-federation-")
    try:
        asyncio.run(_main(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
