"""`timebank bench ring`, as an operator runs it: a small ring reaches its steady state, the command says so with its
figures, and no server outlives it, whether it finishes or is interrupted."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.node.processes import server_tempdir


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The bench's temporary directory, so that its processes can be told by their command lines."""
    path = server_tempdir("timebank-test-ring-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _bench(scratch: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.node.cli", "bench", "ring", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )


def _left_behind(scratch: Path, *, pids: bool = False) -> list[str]:
    """Command lines of live processes that name the bench's directory (its nodes, NATS servers and PostgreSQL),
    each after its pid if ``pids``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(scratch) in cmdline:
            found.append(f"{entry.name} {cmdline}" if pids else cmdline)
    return found


def _mib(line: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) MiB", line)]


def test_a_ring_of_three_reaches_the_steady_state_and_prints_its_figures(scratch: Path) -> None:
    bench = _bench(scratch, "--networks", "3", "--per-link", "4")
    out, _ = bench.communicate(timeout=600)
    assert bench.returncode == 0, out
    assert re.search(r"^started in [\d.]+ s: PostgreSQL and 3 databases ", out, re.M), out
    # 4 payments each way over each of the 3 links, and one each way to an account the neighbour does not have.
    assert "trades: 30 payments over 3 links" in out, out
    assert "(24 to neighbours' members, 6 to accounts they do not have)" in out, out
    steady = next(line for line in out.splitlines() if line.startswith("steady state "))
    assert re.match(r"steady state [\d.]+ s after the last payment", steady), out
    assert "cosigned by both; nothing in flight; every link's clearing balances sum to 0; 0 messages refused" in steady
    # The auditor pairs two neighbours' logs: 5 payments each way between them (4 accepted, 1 rejected and reversed).
    audit = next(line for line in out.splitlines() if line.startswith("audit of ring00 with ring01's log: "))
    assert "pass; pairing: 10 cross-network transfers paired" in audit, out
    assert audit.endswith(" = 0"), out
    # RSS and PSS, each at its peak and at the steady state, per kind of process and in total.
    for label in ("nodes (3 processes)", "nats-servers (3 processes)", "postgresql (", "total "):
        line = next(line for line in out.splitlines() if line.strip().startswith(label))
        rss_peak, rss, pss_peak, pss = _mib(line)
        assert rss_peak >= rss >= pss > 0, line
        assert pss_peak >= pss, line
    assert _left_behind(scratch) == []


def test_an_interrupted_ring_leaves_no_server_running(scratch: Path) -> None:
    bench = _bench(scratch, "--networks", "3")
    assert bench.stdout is not None
    try:
        deadline = time.monotonic() + 300
        for line in bench.stdout:
            if line.startswith("started in ") or time.monotonic() > deadline:
                break
        assert _left_behind(scratch), "the ring's servers should be running"
        bench.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, out
    assert "interrupted: every node and server of the ring is stopped" in out
    assert _left_behind(scratch) == []


def test_a_ring_whose_node_dies_fails_naming_it_and_stops_the_rest(scratch: Path) -> None:
    bench = _bench(scratch, "--networks", "3", "--per-link", "200")
    assert bench.stdout is not None
    try:
        deadline = time.monotonic() + 300
        for line in bench.stdout:
            if line.startswith("started in ") or time.monotonic() > deadline:
                break
        [victim] = [int(cmd.split()[0]) for cmd in _left_behind(scratch, pids=True) if "/ring01/node.toml" in cmd]
        os.kill(victim, signal.SIGKILL)
        out, _ = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 1, out
    assert "timebank bench ring: ring01's node exited; its log ends:" in out, out
    assert "steady state" not in out
    assert _left_behind(scratch) == []
