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
    """One process's resident memory in bytes: all of it (RSS), and its proportional share (PSS), where each page it
    shares with other processes (PostgreSQL's shared buffers, libraries) counts divided by how many share it."""

    rss: int
    pss: int


def _kib_field(text: str, name: str) -> int | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value.split()[0]) * 1024
    return None


def usage(pid: int) -> Usage | None:
    """The process's RSS and PSS, or None if it is gone."""
    try:
        rss = _kib_field(Path(f"/proc/{pid}/status").read_text(), "VmRSS")
        pss = _kib_field(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss")
    except OSError:
        return None
    if rss is None:
        return None  # a zombie has no memory left
    return Usage(rss, rss if pss is None else pss)


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
    """RSS and PSS per kind of process, summed over its processes (bytes), and how many processes."""

    rss: dict[str, int]
    pss: dict[str, int]
    processes: dict[str, int]


def sample(kinds: dict[str, Kind]) -> Sample:
    """Read every process of each kind."""
    rss: dict[str, int] = {}
    pss: dict[str, int] = {}
    counts: dict[str, int] = {}
    for kind, pids in kinds.items():
        used = [u for u in (usage(pid) for pid in pids()) if u is not None]
        rss[kind] = sum(u.rss for u in used)
        pss[kind] = sum(u.pss for u in used)
        counts[kind] = len(used)
    return Sample(rss, pss, counts)


@dataclass
class Peaks:
    """Each figure's highest value seen (a kind's peak and the total's need not be at the same moment), and the
    last sample."""

    rss: dict[str, int] = field(default_factory=dict)
    pss: dict[str, int] = field(default_factory=dict)
    last: Sample | None = None

    def add(self, s: Sample) -> None:
        for peaks, values in ((self.rss, s.rss), (self.pss, s.pss)):
            for kind, value in [*values.items(), ("total", sum(values.values()))]:
                peaks[kind] = max(peaks.get(kind, 0), value)
        self.last = s


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
