"""What an audit found: one result per check, a short human summary, and the JSON report."""

from __future__ import annotations

import base64
from typing import Literal

import msgspec

Status = Literal["pass", "fail", "skip"]

# Every check the auditor knows, in the order they are reported. A new check (such as pairing two networks'
# cross-network transfers) is one more line here and one more function that records into ``Checks``.
CHECKS: dict[str, str] = {
    "checkpoint.signature": "the checkpoint is signed by the network key",
    "checkpoint.witnesses": "the checkpoint carries the required witness cosignatures",
    "log.entries": "every entry hashes into the signed root",
    "log.tiles": "the log's hash tiles match its entries",
    "log.consistency": "the log is consistent with every checkpoint this auditor saw before",
    "ledger.well_formed": "every entry decodes and names open accounts",
    "ledger.unique_ids": "no transfer id appears twice (idempotency was kept)",
    "ledger.limits": "no transfer took an account past its floor or ceiling",
    "ledger.reversals": "every reversal undoes an earlier transfer, and none is reversed twice",
    "ledger.zero_sum": "balances sum to zero",
    "ledger.balances": "the balances the node serves equal the balances replayed from the entries",
    "federation.pairing": "every cross-network transfer pairs with the neighbour's answer, and the clearing "
    "accounts net to what is in flight",
    "entry.inclusion": "the entry is included under the signed checkpoint",
}

MAX_LISTED = 20
"""Failures listed per check; the rest are only counted."""


class Failure(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing found wrong, with the entry index (and account) it concerns when there is one.

    ``log`` names the log the index is in when the check reads two networks' logs."""

    message: str
    index: int | None = None
    account: str | None = None
    log: str | None = None


class CheckResult(msgspec.Struct, kw_only=True):
    id: str
    title: str
    status: Status
    detail: str = ""
    failure_count: int = 0
    failures: list[Failure] = msgspec.field(default_factory=list)


class CheckpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    origin: str
    size: int
    root: str  # base64, as in the checkpoint
    note: str  # the signed note as served, cosignatures included


class Timings(msgspec.Struct, kw_only=True):
    download: float = 0.0
    verify: float = 0.0


class Report(msgspec.Struct, kw_only=True):
    """The JSON report (``--json``): ``ok`` is true exactly when no check failed, the neighbour's included.

    ``neighbour`` is the audit of the second network's log, when one was given for pairing cross-network transfers.
    """

    version: int = 1
    ok: bool
    mode: Literal["full", "checkpoint", "entry"]
    source: str
    origin: str
    checkpoint: CheckpointInfo | None
    entries: int
    balances_size: int | None
    state_file: str | None
    started_at: str
    seconds: float
    timings: Timings
    checks: list[CheckResult]
    neighbour: Report | None = None


class Checks:
    """Collects failures and outcomes per check id while an audit runs."""

    def __init__(self) -> None:
        self._results: dict[str, CheckResult] = {}

    def _get(self, check: str) -> CheckResult:
        result = self._results.get(check)
        if result is None:
            result = CheckResult(id=check, title=CHECKS[check], status="pass")
            self._results[check] = result
        return result

    def fail(
        self,
        check: str,
        message: str,
        *,
        index: int | None = None,
        account: str | None = None,
        log: str | None = None,
    ) -> None:
        result = self._get(check)
        result.status = "fail"
        result.detail = ""
        result.failure_count += 1
        if len(result.failures) < MAX_LISTED:
            result.failures.append(Failure(message=message, index=index, account=account, log=log))

    def passed(self, check: str, detail: str) -> None:
        """Record that the check ran and what it covered; it passes unless a failure was (or is later) recorded."""
        result = self._get(check)
        if result.status != "fail":
            result.detail = detail

    def skip(self, check: str, reason: str) -> None:
        """Record that the check could not run or does not apply; a check with failures stays failed."""
        result = self._get(check)
        if result.status == "pass" and not result.failure_count:
            result.status = "skip"
        result.detail = reason

    def failed(self, check: str) -> bool:
        result = self._results.get(check)
        return result is not None and result.status == "fail"

    def results(self) -> list[CheckResult]:
        order = list(CHECKS)
        return sorted(self._results.values(), key=lambda r: order.index(r.id))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_MARK = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}


def summary(report: Report) -> str:
    """A short human summary: what was checked, how many entries, what failed and where."""
    lines = [f"timebank audit of {report.source}", *_check_lines(report)]
    failed = [c.id for c in report.checks if c.status == "fail"]
    if report.neighbour is not None:
        lines.append(f"neighbour: audit of {report.neighbour.source}")
        lines += _check_lines(report.neighbour)
        failed += [f"{report.neighbour.origin}: {c.id}" for c in report.neighbour.checks if c.status == "fail"]
    lines.append(
        "PASS: every check passed" if report.ok else f"FAIL: {len(failed)} check(s) failed: {', '.join(failed)}"
    )
    return "\n".join(lines) + "\n"


def _check_lines(report: Report) -> list[str]:
    lines = []
    if report.checkpoint is not None:
        cp = report.checkpoint
        lines.append(f"  log {cp.origin}, checkpoint size {cp.size:,}, root {cp.root}")
    if report.mode == "full":
        lines.append(f"  {report.entries:,} entries verified in {report.seconds:.1f} s")
    for check in report.checks:
        lines.append(f"  [{_MARK[check.status]}] {check.title}" + (f": {check.detail}" if check.detail else ""))
        for failure in check.failures:
            where = []
            if failure.index is not None:
                where.append(
                    f"entry {failure.index}" if failure.log is None else f"{failure.log} entry {failure.index}"
                )
            if failure.account is not None:
                where.append(failure.account)
            prefix = f"{', '.join(where)}: " if where else ""
            lines.append(f"         - {prefix}{failure.message}")
        hidden = check.failure_count - len(check.failures)
        if hidden > 0:
            lines.append(f"         ... and {hidden:,} more")
    return lines


report_encoder = msgspec.json.Encoder()


def to_json(report: Report) -> bytes:
    return msgspec.json.format(report_encoder.encode(report), indent=2) + b"\n"
