"""Replaying the ledger from its entries, checking the invariants the ledger promises as each entry is met.

The replay is the auditor's own reading of the log: it imports the entry types from the ledger's log schema
(``services.ledger.entries``) and nothing else, keeps only what the checks need, and reports through ``Checks``
with the entry's index.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import msgspec

from services.audit.report import Checks
from services.ledger.entries import (
    MAX_MINUTES,
    AccountClosedEntry,
    AccountOpened,
    LimitsChanged,
    LogEntry,
    Transfer,
    entry_decoder,
)

_array_decoder = msgspec.json.Decoder(list[LogEntry])


# Compared with instead of a missing ceiling, so that the hot path makes one comparison.
NO_CEILING = 1 << 80


class Account:
    """An account as the log describes it so far."""

    __slots__ = ("balance", "ceiling", "closed", "floor", "id", "kind", "opened", "peer", "top")

    def __init__(self, entry: AccountOpened, index: int) -> None:
        self.id = entry.account
        self.kind = entry.kind
        self.peer = entry.peer
        self.opened = index
        self.balance = 0
        self.closed = False
        self.set_limits(entry.floor, entry.ceiling)

    def set_limits(self, floor: int, ceiling: int | None) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.top = NO_CEILING if ceiling is None else ceiling


def decode_entries(
    array: bytes | memoryview | None, data: Callable[[], bytes], first: int, checks: Checks
) -> list[LogEntry | None]:
    """Decode a bundle's entries (entry ``first`` is its first); None where one does not decode.

    ``array`` is the bundle as one JSON array (see ``tree.prepare_bundle``), decoded in one call. Without one, or if
    any entry fails, each entry of the bundle's ``data`` is decoded alone so that failures name their index.
    """
    if array is not None:
        try:
            return list(_array_decoder.decode(array))
        except msgspec.DecodeError:
            pass
    raw = data()
    out: list[LogEntry | None] = []
    p = 0
    end = len(raw)
    while p + 2 <= end:
        start = p + 2
        p = start + ((raw[p] << 8) | raw[p + 1])
        try:
            out.append(entry_decoder.decode(raw[start:p]))
        except msgspec.DecodeError as exc:
            checks.fail("ledger.well_formed", f"entry does not decode as a ledger entry: {exc}", index=first + len(out))
            out.append(None)
    return out


class Replay:
    """The ledger state rebuilt from entries, and the invariants checked on the way."""

    def __init__(self, checks: Checks) -> None:
        self.checks = checks
        # Open accounts only: a closed one moves to ``closed``, so the hot path never asks whether one is closed.
        self.accounts: dict[str, Account] = {}
        self.closed: dict[str, Account] = {}
        # Every transfer's id, in log order: one append is the cheapest record the hot path can keep. Where a
        # transfer is in the log follows from its place among the ids and ``gaps``: for each index that holds no
        # recorded transfer (another entry, or none), how many ids were recorded before it.
        self.ids: list[str] = []
        self.gaps: list[int] = []
        # Reversals met on the way, checked when the replay finishes.
        self.reversals: list[tuple[int, Transfer]] = []
        # What ``settle`` has found so far: the distinct ids among the first ``_counted``; for the ids that
        # reversals name, their place among the ids (``_found``) or that they were not near the reversal
        # (``_wanted``, looked for when the replay finishes); and the transfers reversed, by index, as taken while
        # they were at hand.
        self.distinct: set[str] = set()
        self._counted = 0
        self._window = 0  # where among the ids the stretch before the last one settled starts
        self._settled = 0  # reversals whose targets were looked for
        self._found: dict[str, int] = {}
        self._wanted: set[str] = set()
        self._originals: dict[int, LogEntry | None] = {}
        # Reversals judged by ``settle`` (what they undid first, and what was wrong, by index), and the ones left
        # for ``finish`` to judge.
        self._reversed_by: dict[str, int] = {}
        self._verdicts: list[tuple[int, str]] = []
        self._later: list[tuple[int, Transfer]] = []
        self.size = 0
        self._next = 0  # the index after the last entry replayed
        self.transfer_count = 0  # known when the replay finishes
        self.has_peers = False
        # Entries the balance replay does not interpret (cross-network decisions, newer types), and transfers that
        # touch a peer clearing account: what a cross-network pairing check reads.
        self.other: list[tuple[int, Any]] = []
        self.crossnet: list[tuple[int, Transfer]] = []

    @property
    def reversal_count(self) -> int:
        return len(self.reversals)

    @property
    def account_count(self) -> int:
        return len(self.accounts) + len(self.closed)

    def account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id) or self.closed.get(account_id)

    def all_accounts(self) -> list[Account]:
        return [*self.accounts.values(), *self.closed.values()]

    def balances(self) -> dict[str, int]:
        return {a.id: a.balance for a in self.all_accounts()}

    def replay(self, entries: list[LogEntry | None]) -> None:
        """Apply entries ``self.size`` .. in order (the hot loop: one pass, no allocation but the record)."""
        ids, gaps = self.ids, self.gaps
        if self.size > self._next:  # entries that could not be read
            gaps.extend([len(ids)] * (self.size - self._next))
        get = self.accounts.get
        add_id = ids.append
        has_peers = self.has_peers
        index = self.size
        for index, entry in enumerate(entries, self.size):
            if type(entry) is Transfer:
                minutes = entry.minutes
                payer = get(entry.payer)
                payee = get(entry.payee)
                if payer is None or payee is None or payer is payee or not 0 < minutes <= MAX_MINUTES:
                    found = self._malformed(index, entry)
                    if found is None:
                        gaps.append(len(ids))
                        continue
                    payer, payee = found
                if (balance := payer.balance - minutes) < payer.floor:
                    self._below_floor(index, entry, payer, balance)
                payer.balance = balance
                if (balance := payee.balance + minutes) > payee.top:
                    self._above_ceiling(index, entry, payee, balance)
                payee.balance = balance
                add_id(entry.id)
                if entry.reverses is not None:
                    self.reversals.append((index, entry))
                if has_peers and (payer.peer is not None or payee.peer is not None):
                    self.crossnet.append((index, entry))
                continue
            gaps.append(len(ids))
            if type(entry) is AccountOpened:
                self._open(index, entry)
                has_peers = self.has_peers
            elif type(entry) is LimitsChanged:
                account = self._open_account(index, entry.account, "changes the limits of")
                if account is not None:
                    self._check_limits(index, entry.account, entry.floor, entry.ceiling)
                    account.set_limits(entry.floor, entry.ceiling)
            elif type(entry) is AccountClosedEntry:
                account = self._open_account(index, entry.account, "closes")
                if account is not None:
                    if account.balance != 0:
                        self.checks.fail(
                            "ledger.well_formed",
                            f"closes {account.id} while it holds {account.balance} minutes",
                            index=index,
                            account=account.id,
                        )
                    account.closed = True
                    self.closed[account.id] = self.accounts.pop(account.id)
            elif entry is not None:
                self.other.append((index, entry))
        self.size = self._next = index + 1 if entries else self.size

    def settle(self, read: Callable[[list[int]], dict[int, LogEntry | None]]) -> None:
        """Count the ids recorded since the last call; look among them and the ones counted by the call before
        for the transfers that the new reversals name, and judge those reversals while the transfers are at hand
        (the others are judged when the replay finishes).

        Called after each bundle while the work is shared with worker processes, rather than in one pass when the
        replay finishes and the workers are done: the ids are still in the cache, no worker waits, and a
        correction usually follows closely what it undoes. ``read`` gives the entries it can at some indexes of
        the last two stretches; the rest are read again when the replay finishes.
        """
        ids, found = self.ids, self._found
        window, start, stop = self._window, self._counted, len(ids)
        self.distinct.update(ids[start:])
        self._window, self._counted = start, stop
        if self._settled == len(self.reversals):
            return
        fresh = self.reversals[self._settled :]
        self._settled = len(self.reversals)
        located: list[int] = []
        for _, entry in fresh:
            target = entry.reverses
            if target is None or target in found:
                continue
            try:
                position = ids.index(target, window, stop)
            except ValueError:
                self._wanted.add(target)
                continue
            found[target] = position
            located.append(self._index_of(position))
        if located:
            self._originals.update(read(sorted(located)))
        for index, entry in fresh:
            at = found.get(entry.reverses or "")
            if at is not None and (original := self._index_of(at)) in self._originals:
                self._judge(index, entry, at, self._originals[original], self._reversed_by, self._verdicts)
            else:
                self._later.append((index, entry))

    def _judge(
        self,
        index: int,
        entry: Transfer,
        at: int | None,
        was: LogEntry | None,
        reversed_by: dict[str, int],
        verdicts: list[tuple[int, str]],
    ) -> None:
        """Judge the reversal ``entry`` at ``index``, given the place among the ids of the transfer it names (None:
        nowhere) and that transfer as read (``was``); what is wrong goes to ``verdicts``."""
        target = entry.reverses
        assert target is not None
        if at is None or (original := self._index_of(at)) >= index:
            verdicts.append((index, f"transfer {entry.id} reverses {target}, not an earlier transfer"))
            return
        earlier = reversed_by.setdefault(target, index)
        if earlier != index:
            verdicts.append(
                (index, f"transfer {entry.id} reverses {target} (entry {original}) a second time; entry {earlier} did")
            )
        if not isinstance(was, Transfer):  # it was read as a transfer a moment ago: the files changed
            verdicts.append((index, f"entry {original} no longer reads as a transfer"))
        elif (was.payer, was.payee, was.minutes) != (entry.payee, entry.payer, entry.minutes):
            verdicts.append(
                (
                    index,
                    f"transfer {entry.id} does not undo {was.id} (entry {original}): it must pay {was.minutes} "
                    f"minutes from {was.payee} back to {was.payer}",
                )
            )

    def _index_of(self, position: int) -> int:
        """The log index of the transfer whose id is ``self.ids[position]``."""
        return position + bisect.bisect_right(self.gaps, position)

    def _below_floor(self, index: int, entry: Transfer, payer: Account, balance: int) -> None:
        self.checks.fail(
            "ledger.limits",
            f"transfer {entry.id} took {payer.id} to {balance} minutes, below its floor of {payer.floor}",
            index=index,
            account=payer.id,
        )

    def _above_ceiling(self, index: int, entry: Transfer, payee: Account, balance: int) -> None:
        self.checks.fail(
            "ledger.limits",
            f"transfer {entry.id} took {payee.id} to {balance} minutes, above its ceiling of {payee.ceiling}",
            index=index,
            account=payee.id,
        )

    def _malformed(self, index: int, entry: Transfer) -> tuple[Account, Account] | None:
        """Report what is wrong with a transfer off the hot path; (payer, payee) if it can still be applied."""
        fail = self.checks.fail
        payer = self.account(entry.payer)
        payee = self.account(entry.payee)
        for role, name, account in (("payer", entry.payer, payer), ("payee", entry.payee, payee)):
            if account is None:
                fail("ledger.well_formed", f"transfer {entry.id} names {role} {name}, never opened", index=index)
            elif account.closed:
                fail("ledger.well_formed", f"transfer {entry.id} names {role} {name}, already closed", index=index)
        if payer is not None and payer is payee:
            fail("ledger.well_formed", f"transfer {entry.id} pays {payer.id} to itself", index=index)
        if not 0 < entry.minutes <= MAX_MINUTES:
            fail(
                "ledger.well_formed",
                f"transfer {entry.id} moves {entry.minutes} minutes, outside 1..{MAX_MINUTES}",
                index=index,
            )
        # Whatever is wrong with it, the transfer is in the log: apply it when its accounts exist.
        return None if payer is None or payee is None else (payer, payee)

    def finish(self, read: Callable[[list[int]], dict[int, LogEntry | None]]) -> None:
        """The checks that need every transfer: ids used once, reversals that undo one earlier transfer, once.

        ``read`` gives the entries at some indexes again (the transfers that reversals name, unless ``settle``
        read them already). Then the record of every transfer's id is let go: a list and a set of a million
        items that the cyclic garbage collector would otherwise walk through whenever it runs from then on."""
        self.settle(read)
        fail = self.checks.fail
        ids, index_of = self.ids, self._index_of
        self.transfer_count = len(ids)
        # Where each id a reversal names is first used, and the reversals left to judge.
        found, pending = self._found, self._later
        reversed_by, verdicts = self._reversed_by, self._verdicts
        if len(self.distinct) != len(ids):
            first: dict[str, int] = {}
            for position, tid in enumerate(ids):
                earlier = first.setdefault(tid, position)
                if earlier != position:
                    fail(
                        "ledger.unique_ids",
                        f"transfer id {tid} was already used by entry {index_of(earlier)}",
                        index=index_of(position),
                    )
            # What ``settle`` judged assumed that every id is used once: judge every reversal again.
            found = {tid: at for tid, at in first.items() if tid in self._found or tid in self._wanted}
            pending, reversed_by, verdicts = self.reversals, {}, []
        elif self._wanted:  # named by reversals but not near them
            wanted = self._wanted - found.keys()
            found.update((tid, position) for position, tid in enumerate(ids) if tid in wanted)
        places = {index: found.get(entry.reverses or "") for index, entry in pending}
        originals = self._originals
        unread = sorted({index_of(at) for at in places.values() if at is not None} - originals.keys())
        if unread:
            originals.update(read(unread))
        for index, entry in pending:
            at = places[index]
            self._judge(index, entry, at, None if at is None else originals.get(index_of(at)), reversed_by, verdicts)
        for index, message in sorted(verdicts, key=lambda verdict: verdict[0]):
            fail("ledger.reversals", message, index=index)
        self.ids, self.distinct, self._found, self._originals, self._later = [], set(), {}, {}, []

    def _open(self, index: int, entry: AccountOpened) -> None:
        existing = self.account(entry.account)
        if existing is not None:
            self.checks.fail(
                "ledger.unique_ids",
                f"account {entry.account} was already opened by entry {existing.opened}",
                index=index,
                account=entry.account,
            )
            return
        self._check_limits(index, entry.account, entry.floor, entry.ceiling)
        if (entry.kind == "peer") != (entry.peer is not None):
            self.checks.fail(
                "ledger.well_formed",
                "a peer account must name its peer network, and only a peer account may",
                index=index,
                account=entry.account,
            )
        self.accounts[entry.account] = Account(entry, index)
        if entry.peer is not None:
            self.has_peers = True

    def _open_account(self, index: int, account_id: str, what: str) -> Account | None:
        """The open account, or None (with the failure recorded) if it was never opened or is closed."""
        account = self.accounts.get(account_id)
        if account is None:
            closed = account_id in self.closed
            self.checks.fail(
                "ledger.well_formed",
                f"{what} {account_id}, {'already closed' if closed else 'never opened'}",
                index=index,
            )
        return account

    def _check_limits(self, index: int, account: str, floor: int, ceiling: int | None) -> None:
        if floor > 0 or (ceiling is not None and ceiling < 0):
            self.checks.fail(
                "ledger.well_formed",
                f"limits floor {floor}, ceiling {ceiling}: the floor must be <= 0 and the ceiling >= 0",
                index=index,
                account=account,
            )
