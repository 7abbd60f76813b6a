"""What ``timebank bench exchange`` measured, phase by phase, and the report it prints against its targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

SEARCH_TARGET_P99 = 0.050
EXCHANGE_TARGET_RATE = 300.0


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies: list[float]
    target: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def quantile(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]

    def line(self) -> str:
        rate = f"{self.rate:>9,.0f}/s" if self.seconds else " " * 11
        took = f"({self.count:,} in {self.seconds:.1f} s)" if self.seconds else f"({self.count:,})"
        return (
            f"{self.name:<32} {rate} {self.quantile(50) * 1000:>8.1f}ms {self.quantile(99) * 1000:>8.1f}ms"
            f"  {self.target:<22} {took}"
        )


def print_report(
    search: Result,
    per_page: float,
    exchanges: Result,
    steps: list[Result],
    cpu: dict[str, list[float]],
    database_measured: bool,
) -> None:
    """The table of phases, then the CPU each search and exchange cost, then whether the targets are met."""
    print()
    print(f"{'phase':<32} {'rate':>11} {'p50':>10} {'p99':>10}  {'target':<22}")
    print(search.line())
    print(exchanges.line())
    for step in steps:
        print(step.line())
    print()
    print(f"search: {per_page:.1f} listings per page on average")
    for what, (node, database) in cpu.items():
        db = f"{database * 1000:.2f} ms" if database_measured else "not measured (--database-url)"
        print(f"CPU per {what}: node {node * 1000:.2f} ms, PostgreSQL {db}")
    ok_search = search.quantile(99) < SEARCH_TARGET_P99
    ok_rate = exchanges.rate >= EXCHANGE_TARGET_RATE
    print(f"search p99 {'meets' if ok_search else 'MISSES'} the target; "
          f"exchanges/s {'meets' if ok_rate else 'MISSES'} the target")  # fmt: skip
