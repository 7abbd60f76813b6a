"""Memory of a benchmark's processes by kind (nodes, NATS servers, PostgreSQL), read from /proc, with peaks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# A kind of process: its pids, asked afresh at each sample (PostgreSQL starts and ends backends as it goes).
Kind = Callable[[], Iterable[int]]


@dataclass(frozen=True)
class Usage:
    """One process's resident memory in bytes, and how much of it is shared memory (PostgreSQL's buffers)."""

    rss: int
    shmem: int


def usage(pid: int) -> Usage | None:
    """The process's VmRSS and RssShmem, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssShmem"):
            fields[key] = int(value.split()[0]) * 1024
    if "VmRSS" not in fields:
        return None  # a zombie has no memory left
    return Usage(fields["VmRSS"], fields.get("RssShmem", 0))


def children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (PostgreSQL's backends and workers under its postmaster)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name, in parentheses, may hold spaces: the fields after its closing one are fixed.
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class Sample:
    """Resident memory per kind of process, summed over its processes (bytes), and how many processes."""

    rss: dict[str, int]
    processes: dict[str, int]
    # Shared memory that a plain RSS sum counts once per process that touched it (PostgreSQL's shared buffers).
    shared_overcount: int

    @property
    def total(self) -> int:
        return sum(self.rss.values())

    @property
    def total_shared_once(self) -> int:
        """The total with each kind's shared memory counted once, not once per process."""
        return self.total - self.shared_overcount


def sample(kinds: dict[str, Kind]) -> Sample:
    """Read every process of each kind."""
    rss: dict[str, int] = {}
    counts: dict[str, int] = {}
    overcount = 0
    for kind, pids in kinds.items():
        used = [u for u in (usage(pid) for pid in pids()) if u is not None]
        rss[kind] = sum(u.rss for u in used)
        counts[kind] = len(used)
        shared = [u.shmem for u in used]
        overcount += sum(shared) - max(shared, default=0)
    return Sample(rss, counts, overcount)


@dataclass
class Peaks:
    """The highest total seen, each kind's highest (not necessarily at the same moment), and the last sample."""

    total: int = 0
    total_shared_once: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    last: Sample | None = None

    def add(self, s: Sample) -> None:
        self.total = max(self.total, s.total)
        self.total_shared_once = max(self.total_shared_once, s.total_shared_once)
        for kind, value in s.rss.items():
            self.by_kind[kind] = max(self.by_kind.get(kind, 0), value)
        self.last = s


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
