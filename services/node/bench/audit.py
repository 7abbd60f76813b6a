"""``timebank bench audit``: audit a large log end to end, beside the bare rate of hashing its entries.

One run builds a valid log of ``--audit-size`` entries in a private PostgreSQL (with the ledger benchmark's
``grow_log``), serves it with `timebank serve`, and measures, on the same entries:

- the ceiling: hashing every entry with hashlib and nothing else (no Merkle tree, no decoding, no checks);
- the audit of an export of the log (download excluded), in one process and with a hashing worker;
- the audit of the served node with an empty cache (download included), and the export's download alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from services.audit import tree
from services.audit.export import export
from services.audit.progress import Reporter, reporter
from services.audit.report import Report
from services.audit.signatures import Trust
from services.audit.source import DirectorySource, HttpSource, Source
from services.audit.verify import Options, audit
from services.node.benchdb import bench_databases
from services.node.processes import server_tempdir
from shared.note import Signer, write_signer_key


def _entries(directory: Path, size: int) -> list[bytes]:
    """Every entry of an exported log, as separate bytes objects in memory (what the bare hashing reads)."""
    out: list[bytes] = []
    for index in range(tree.bundle_count(size)):
        data = tree.read_bundle(directory, index, tree.bundle_width(size, index))
        p = 0
        while p < len(data):
            n = (data[p] << 8) | data[p + 1]
            out.append(data[p + 2 : p + 2 + n])
            p += 2 + n
    return out


@dataclass
class Timed:
    """Wall seconds, and CPU seconds of this process and of the worker processes it waited for."""

    wall: float
    cpu: float
    workers: float = 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _best(runs: int, work: Callable[[], object]) -> Timed:
    best: Timed | None = None
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        work()
        timed = Timed(time.perf_counter() - w0, time.process_time() - c0)
        if best is None or timed.wall < best.wall:
            best = timed
    assert best is not None
    return best


def _bare(entries: list[bytes]) -> tuple[Timed, Timed]:
    """Hashing every entry: sha256(entry), and the RFC 9162 leaf hash sha256(0x00 || entry); best of 3 each."""
    sha = hashlib.sha256
    plain = _best(3, lambda: [sha(e).digest() for e in entries])
    leaf = _best(3, lambda: [sha(b"\x00" + e).digest() for e in entries])
    return plain, leaf


def _hash_half(directory: str, size: int, half: int, start: Barrier, results: Queue[float]) -> None:
    """In a worker process: hash half of the entries once both halves are loaded; report the seconds taken."""
    entries = _entries(Path(directory), size)[half::2]
    sha = hashlib.sha256
    start.wait()
    t0 = time.perf_counter()
    for entry in entries:
        sha(entry).digest()
    results.put(time.perf_counter() - t0)


def _bare_in_two(directory: Path, size: int) -> float:
    """Seconds for two processes to hash half of the entries each, at the same time: how much a second process
    can add on this machine right now (the figure to read the 2-process audit against)."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results: Queue[float] = context.Queue()
    workers = [context.Process(target=_hash_half, args=(str(directory), size, half, start, results)) for half in (0, 1)]
    for worker in workers:
        worker.start()
    seconds = max(results.get(), results.get())
    for worker in workers:
        worker.join()
    return seconds


async def _audit(source: Source, trust: Trust, jobs: int, progress: Reporter, runs: int = 1) -> tuple[Report, Timed]:
    """The best of ``runs`` full audits (without a state file), and what it cost."""
    best: tuple[Report, Timed] | None = None
    for _ in range(runs):
        w0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        report = await audit(source, Options(trust=trust, jobs=jobs), progress)
        timed = Timed(time.perf_counter() - w0, time.process_time() - c0, _children_cpu() - k0)
        if not report.ok:
            failed = ", ".join(c.id for c in report.checks if c.status == "fail")
            raise SystemExit(f"timebank bench audit: an audit failed ({failed}); the figures would mean nothing")
        if best is None or timed.wall < best[1].wall:
            best = report, timed
    assert best is not None
    return best


def _line(name: str, count: int, timed: Timed | float, note: str = "") -> str:
    if isinstance(timed, float):
        return f"{name:<50} {count / timed:>12,.0f}/s {timed:>8.2f} s {'':>16}  {note}"
    cpu = f"{timed.cpu:.2f}" + (f" + {timed.workers:.2f}" if timed.workers >= 0.005 else "")
    return f"{name:<50} {count / timed.wall:>12,.0f}/s {timed.wall:>8.2f} s {cpu:>16}  {note}"


async def _main(args: argparse.Namespace, root: Path) -> None:
    # The ledger's benchmark builds and serves the log with the ledger itself: imported only here, so that no
    # module of the audit loads the ledger's decide logic or the web framework.
    from services.node.bench.ledger import ORIGIN, grow_log, serve_node

    size = args.audit_size
    async with bench_databases(args.database_url, root, "timebank_bench_audit") as databases:
        [url] = databases.urls
        signer = Signer.generate(ORIGIN)
        write_signer_key(root / "network.key", signer)
        trust = Trust(signer.verifier())

        print(f"building a valid {size:,}-entry log ...", flush=True)
        t0 = time.perf_counter()
        await grow_log(url, signer, size)
        print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)

        progress = reporter()
        load_before = os.getloadavg()
        async with serve_node(url, root) as base:
            directory = root / "export"
            t0 = time.perf_counter()
            await export(base, directory, progress)
            exported = time.perf_counter() - t0

            entries = _entries(directory, size)
            assert len(entries) == size
            plain, leaf = _bare(entries)
            del entries
            two_at_once = _bare_in_two(directory, size)

            local = DirectorySource(directory)
            one, one_cost = await _audit(local, trust, 1, progress, runs=3)
            _, two_cost = await _audit(local, trust, 2, progress, runs=3)
            remote = HttpSource(base, root / "cache")
            try:
                http, http_cost = await _audit(remote, trust, 2, progress)
            finally:
                await remote.close()
            # The ceiling again, after the audits: on a busy machine the two differ.
            entries = _entries(directory, size)
            plain_after, leaf_after = _bare(entries)
            del entries
        load_after = os.getloadavg()

        ceiling = min(plain, plain_after, key=lambda t: t.wall)
        print()
        print(
            f"{size:,} entries; {os.cpu_count()} CPUs; load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after; every audit passed every check; best of 3 runs except over HTTP"
        )
        print(f"{'phase':<50} {'entries/s':>14} {'wall':>10} {'cpu (+ workers)':>16}")
        runs = f"(before/after the audits: {plain.wall:.2f}/{plain_after.wall:.2f} s)"
        print(_line("bare hashing, sha256(entry): the ceiling", size, ceiling, runs))
        print(_line("bare hashing, leaf hash sha256(0x00 || entry)", size, min(leaf, leaf_after, key=lambda t: t.wall)))
        print(_line("bare hashing, sha256(entry), 2 processes at once", size, two_at_once, "(what a 2nd CPU adds now)"))
        print(_line("audit of the export, 1 process (no download)", size, one_cost))
        print(_line("audit of the export, 2 processes (no download)", size, two_cost))
        print(_line("export over HTTP (download only, with hash tiles)", size, exported))
        print(_line("audit over HTTP, empty cache (download included)", size, http_cost))
        print(_line("  of which download", size, http.timings.download))
        print(_line("  of which verification", size, http.timings.verify))
        print()
        for name, cost in (("1 process", one_cost), ("2 processes", two_cost)):
            print(
                f"full verification, {name}: {cost.wall:.2f} s = {ceiling.wall / cost.wall:.1%} of the bare hashing "
                f"rate (target >= 25%), {'under' if cost.wall < 20 else 'OVER'} 20 s"
            )
        print(f"audit over HTTP, download included: {http_cost.wall:.2f} s ({one.entries:,} entries)")


def run(args: argparse.Namespace) -> int:
    root = server_tempdir("timebank-bench-audit-")
    try:
        asyncio.run(_main(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
