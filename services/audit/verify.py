"""``timebank audit``: runs every check on a log from a ``Source`` and returns the report.

A full audit reads every entry once: the leaf hashes and tiles are computed from the stored bytes (in worker
processes when the log is large), while the entries are decoded once and replayed here. A checkpoint-only or
entry audit fetches only the checkpoint and proofs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from services.audit import tree
from services.audit.history import check_consistency
from services.audit.inclusion import check_inclusions
from services.audit.pairing import CHECK, Side, check_pairing, check_unpaired
from services.audit.progress import Reporter, silent_task
from services.audit.replay import Replay
from services.audit.report import CheckpointInfo, Checks, Report, Timings, b64
from services.audit.scan import Hashed, scan, warm_up
from services.audit.signatures import SignedCheckpoint, Trust, check_checkpoint, check_witnesses
from services.audit.source import ServedBalances, Source
from services.audit.state import AuditState, SeenCheckpoint
from shared import logverify, merkle, tiles

Mode = Literal["full", "checkpoint", "entry"]


@dataclass(frozen=True)
class Neighbour:
    """A second network's log, audited in full too, to pair the cross-network transfers between the two."""

    source: Source
    trust: Trust


@dataclass
class Options:
    trust: Trust
    mode: Mode = "full"
    state: AuditState | None = None
    entries: list[int] = field(default_factory=list)
    proofs: list[tuple[str, str]] = field(default_factory=list)  # (file name, .tlog-proof text)
    jobs: int = 1
    neighbour: Neighbour | None = None


@dataclass
class _Run:
    """What one audit has found so far."""

    checks: Checks
    options: Options
    source: Source | None
    started: float = field(default_factory=time.perf_counter)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    signed: SignedCheckpoint | None = None
    met: list[SignedCheckpoint] = field(default_factory=list)  # every checkpoint checked (several proofs)
    entries: int = 0
    balances_size: int | None = None
    timings: Timings = field(default_factory=Timings)
    replay: Replay | None = None

    def seen(self) -> list[SeenCheckpoint] | None:
        """The checkpoints of this log seen before; None when the audit keeps no state."""
        state = self.options.state
        return None if state is None else state.seen(self.options.trust.verifier.to_text())

    def description(self) -> str:
        """Where the log was read (a node's URL is known exactly once the ledger was found on it)."""
        if self.source is not None:
            return self.source.description
        return ", ".join(name for name, _ in self.options.proofs)

    def side(self) -> Side | None:
        """This log as the pairing of two networks reads it; None unless it was signed and replayed."""
        if self.signed is None or self.replay is None:
            return None
        return Side(self.signed.checkpoint.origin, self.signed.checkpoint.size, self.replay)

    def report(self, state_file: Path | None, neighbour: Report | None = None) -> Report:
        cp = self.signed.checkpoint if self.signed is not None else None
        results = self.checks.results()
        return Report(
            ok=bool(results) and all(c.status != "fail" for c in results) and (neighbour is None or neighbour.ok),
            mode=self.options.mode,
            source=self.description(),
            origin=self.options.trust.verifier.name,
            checkpoint=None
            if cp is None or self.signed is None
            else CheckpointInfo(
                origin=cp.origin, size=cp.size, root=b64(cp.root_hash), note=self.signed.note.decode("utf-8", "replace")
            ),
            entries=self.entries,
            balances_size=self.balances_size,
            state_file=None if state_file is None else str(state_file),
            started_at=self.started_at,
            seconds=round(time.perf_counter() - self.started, 3),
            timings=self.timings,
            checks=results,
            neighbour=neighbour,
        )


async def audit(
    source: Source | None, options: Options, progress: Reporter, *, state_file: Path | None = None
) -> Report:
    """Run the audit the options ask for and return its report (``ok`` only if no check failed)."""
    run = _Run(Checks(), options, source)
    neighbour: Report | None = None
    if options.mode == "full":
        assert source is not None
        await _full(run, source, progress)
        if options.neighbour is not None:
            neighbour = await _pair(run, options.neighbour, progress, state_file)
        elif (side := run.side()) is not None:
            check_unpaired(run.checks, side)
    elif options.mode == "checkpoint":
        assert source is not None
        signed = check_checkpoint(await source.checkpoint(), options.trust, run.checks)
        if signed is not None:
            run.signed = signed
            check_witnesses(signed, options.trust, run.checks)
            await check_consistency(run.checks, run.seen(), source, signed)
    else:
        run.met, run.entries = await check_inclusions(
            run.checks, options.trust, source, options.entries, options.proofs, run.seen()
        )
        run.signed = run.met[-1] if run.met else None
    _remember(run)
    return run.report(state_file, neighbour)


async def _pair(run: _Run, neighbour: Neighbour, progress: Reporter, state_file: Path | None) -> Report:
    """Audit the neighbour's log in full, then pair the cross-network transfers of the two logs."""
    options = Options(trust=neighbour.trust, state=run.options.state, jobs=run.options.jobs)
    other = _Run(Checks(), options, neighbour.source)
    await _full(other, neighbour.source, progress)
    _remember(other)
    ours, theirs = run.side(), other.side()
    if ours is None or theirs is None:
        run.checks.skip(CHECK, "the two logs were not both read and replayed")
    elif ours.origin == theirs.origin:
        run.checks.fail(CHECK, f"both logs are {ours.origin}'s: give the neighbour's log to pair with")
    else:
        check_pairing(run.checks, ours, theirs)
    return other.report(state_file)


def _remember(run: _Run) -> None:
    state = run.options.state
    if state is None:
        return
    for signed in run.met or ([run.signed] if run.signed is not None else []):
        if signed.signed:
            state.record(run.options.trust.verifier.to_text(), signed.checkpoint, signed.note, run.description())


# ---- full audit ----------------------------------------------------------------------------------------------


async def _full(run: _Run, source: Source, progress: Reporter) -> None:
    checks = run.checks
    # The balances first: the checkpoint read after them covers at least as many entries. (A node signs a
    # checkpoint with every batch it writes; if one is not out yet, wait for it briefly.)
    served = await source.balances()
    note = await source.checkpoint()
    for _ in range(20):
        if served is None or source.holds_tiles or _note_size(note) >= served.size:
            break
        await asyncio.sleep(0.1)
        note = await source.checkpoint()
    signed = check_checkpoint(note, run.options.trust, checks)
    if signed is None:
        for check in ("log.entries", "log.consistency", "ledger.balances"):
            checks.skip(check, "no readable checkpoint")
        return
    run.signed = signed
    check_witnesses(signed, run.options.trust, checks)
    size = signed.checkpoint.size

    warm_up(size, run.options.jobs, download=not source.holds_tiles)
    t0 = time.perf_counter()
    with progress:
        download = silent_task() if source.holds_tiles else progress.task("download", size)
        directory = await source.entries_dir(size, download)
        run.timings.download = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        snapshot_at = served.size if served is not None and served.size <= size else None
        hashed, replay, snapshot = scan(
            directory, size, snapshot_at, checks, progress, run.options.jobs, compare=source.holds_tiles
        )
    run.entries = replay.size
    run.replay = replay
    tile_set = await _check_root(run, source, signed, hashed)
    run.timings.verify = round(time.perf_counter() - t1, 3)
    # Roots recomputed from the entries say something about the signed tree only if the entries make it.
    exact = None if checks.failed("log.entries") else tile_set
    await check_consistency(checks, run.seen(), source, signed, exact)
    _check_ledger(run, replay, served, snapshot)


def _note_size(note: bytes) -> int:
    parts = note.split(b"\n", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else -1


async def _check_root(
    run: _Run, source: Source, signed: SignedCheckpoint, hashed: Hashed
) -> dict[tuple[int, int], bytes] | None:
    """log.entries and log.tiles; returns the tiles computed from the entries when they are all there."""
    checks = run.checks
    size = signed.checkpoint.size
    errors = [(i, e) for i, (_, _, e, _) in enumerate(hashed) if e is not None]
    for bundle, error in errors:
        checks.fail("log.entries", f"entries missing or unreadable: {error}", index=bundle * tiles.TILE_WIDTH)
    tile_set = None
    if not errors:
        tile_set = tree.build_tiles((data, root) for data, root, _, _ in hashed)
        try:
            logverify.check_root(logverify.root_from_tiles(tile_set, size), signed.checkpoint)
        except logverify.LogVerifyError as exc:
            checks.fail("log.entries", str(exc))
    if checks.failed("log.entries"):
        await _locate(run, source, size, hashed)
    checks.passed("log.entries", f"{size:,} entries hashed into the root of the checkpoint")

    if not source.holds_tiles:
        checks.skip("log.tiles", "the node's tiles are compared when auditing an export of the log")
    elif tile_set is None:
        checks.skip("log.tiles", "entries are missing, so the tiles cannot be recomputed")
    else:
        keys = {(level, index) for level, index, _ in tiles.tile_widths(size)}
        # The level-0 tiles were compared while the entries were hashed: read only those that differ, and the rest.
        same = {(0, index) for index, (_, _, _, equal) in enumerate(hashed) if equal}
        theirs = {key: tile_set[key] for key in same} | await source.hash_tiles(size, keys - same)
        for level, index in sorted(keys):
            ours = tile_set[(level, index)]
            got = theirs.get((level, index))
            where = tiles.tile_path(level, index, len(ours) // merkle.HASH_SIZE)
            first_leaf = (index * tiles.TILE_WIDTH) << (tiles.TILE_HEIGHT * level)
            if got is None:
                checks.fail("log.tiles", f"hash tile {where} is missing", index=first_leaf)
                continue
            at = tree.first_difference(ours, got)
            if at is not None:
                node = index * tiles.TILE_WIDTH + at
                checks.fail(
                    "log.tiles",
                    f"hash tile {where} differs from the entries' hashes at its hash {at}",
                    index=node << (tiles.TILE_HEIGHT * level),
                )
        checks.passed("log.tiles", f"{len(keys):,} hash tiles equal the ones computed from the entries")
    return tile_set


async def _locate(run: _Run, source: Source, size: int, hashed: Hashed) -> None:
    """Name the first entries whose hash differs from the log's own level-0 hash tiles."""
    keys = {(0, i) for i in range(tree.bundle_count(size))}
    theirs = await source.hash_tiles(size, keys)
    found = 0
    for bundle, (ours, _, _, _) in enumerate(hashed):
        tile = theirs.get((0, bundle))
        if tile is None:
            continue
        at = tree.first_difference(ours, tile)
        if at is None:
            continue
        index = bundle * tiles.TILE_WIDTH + at
        if at * merkle.HASH_SIZE >= len(ours):
            message = "this entry is missing from the entries served (the log's hash tile has it)"
        else:
            message = "this entry's bytes do not hash to the leaf in the log's own hash tile"
        run.checks.fail("log.entries", message, index=index)
        found += 1
        if found >= 5:
            break
    if not found and theirs:
        run.checks.fail("log.entries", "the log's hash tiles agree with its entries, but neither with the signed root")


# ---- the ledger's invariants and the served balances -----------------------------------------------------------


def _check_ledger(run: _Run, replay: Replay, served: ServedBalances | None, snapshot: dict[str, int] | None) -> None:
    checks = run.checks
    balances = replay.balances()
    accounts = replay.account_count
    checks.passed(
        "ledger.well_formed", f"{replay.size:,} entries: {accounts:,} accounts, {replay.transfer_count:,} transfers"
    )
    checks.passed(
        "ledger.unique_ids", f"{replay.transfer_count:,} transfer ids and {accounts:,} account ids, none twice"
    )
    checks.passed("ledger.limits", f"{replay.transfer_count:,} transfers checked against the limits in force")
    checks.passed("ledger.reversals", f"{replay.reversal_count:,} reversals")
    total = sum(balances.values())
    if total != 0:
        checks.fail("ledger.zero_sum", f"the balances replayed from the entries sum to {total} minutes, not 0")
    if served is not None:
        served_total = sum(a.balance for a in served.accounts)
        if served_total != 0:
            checks.fail("ledger.zero_sum", f"the balances the node serves sum to {served_total} minutes, not 0")
    checks.passed("ledger.zero_sum", f"{accounts:,} balances sum to 0")

    check = "ledger.balances"
    if served is None:
        checks.fail(check, "the source serves no balances (GET /log/balances, or balances.json in an export)")
        return
    run.balances_size = served.size
    covered = run.signed.checkpoint.size if run.signed is not None else 0
    if served.size > covered:
        checks.fail(
            check, f"the balances are for a log of {served.size:,} entries, but the checkpoint covers {covered:,}"
        )
        return
    if snapshot is None:
        checks.fail(
            check,
            f"the balances are for a log of {served.size:,} entries, and the entries up to there could not all be "
            "replayed",
        )
        return
    replayed_kinds = {a.id: a.kind for a in replay.all_accounts() if a.opened < served.size}
    seen: set[str] = set()
    for row in served.accounts:
        seen.add(row.id)
        if row.id not in snapshot:
            checks.fail(check, f"served with {row.balance} minutes, but never opened in the log", account=row.id)
            continue
        if row.balance != snapshot[row.id]:
            checks.fail(
                check,
                f"served balance {row.balance} minutes, but the entries give {snapshot[row.id]}",
                account=row.id,
            )
        if row.kind != replayed_kinds.get(row.id):
            checks.fail(
                check, f"served as a {row.kind} account, opened as {replayed_kinds.get(row.id)}", account=row.id
            )
    for account, balance in snapshot.items():
        if account not in seen:
            checks.fail(check, f"opened in the log (balance {balance} minutes) but not served", account=account)
    checks.passed(check, f"{len(served.accounts):,} balances equal the entries replayed to size {served.size:,}")
