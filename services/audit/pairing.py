"""Pairing two networks' logs: every cross-network transfer meets exactly one answer in the other log.

Network S pays a member of network R with a transfer to S's clearing account for R that names the payee in R
(``remote.account``). R alone decides, in R's log: an acceptance (a transfer from R's clearing account for S, whose
``remote`` names S's transfer and its index) or a rejection (``ledger.crossnet.rejected.v1``). S reverses what R
rejected, and records what R accepted (``ledger.crossnet.accepted.v1``, moving no minutes: from then on S counts
them as settled). With both public logs an auditor checks, in both directions:

- every answer names a transfer the sender's log holds, at that index, with the same payee and minutes;
- no transfer is answered twice, and no accepted transfer is reversed; every reversal undoes a rejected one;
- every acceptance the sender records names the receiver's acceptance of that transfer, at its index in the
  receiver's log, and none is recorded twice;
- nothing else moves minutes in or out of a clearing account;
- ``balance_S(peer:R) + balance_R(peer:S)`` equals the minutes still in flight (undecided, or rejected and not yet
  reversed), which is 0 once the two networks have caught up with each other.

The two logs are read at two checkpoints taken one after the other, so one may have moved on: an answer to a
transfer past the sender's checkpoint is counted as not yet checkable, not as a failure.

Entries that involve a third network (payments through its clearing account, decisions on its transfers, its
rejections) cannot be paired without that network's log: they are counted as unpaired, by log and by the network
they involve, and named in the check's detail, never counted as paired. A log audited alone reports all its
cross-network entries that way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from services.audit.replay import Replay
from services.audit.report import Checks
from services.ledger.entries import CrossnetAccepted, CrossnetRejected, Transfer

CHECK = "federation.pairing"


@dataclass(frozen=True)
class Side:
    """One network's log as the pairing reads it: its origin, its checkpoint size and its replay."""

    origin: str
    size: int
    replay: Replay

    def clearing(self, neighbour: str) -> set[str]:
        """This network's clearing accounts for ``neighbour`` (one, unless it was closed and opened again)."""
        return {a.id for a in self.replay.all_accounts() if a.peer == neighbour}


@dataclass(frozen=True)
class Answer:
    """The receiver's decision on one of the sender's transfers, as the receiver's log records it."""

    at: int  # its index in the receiver's log
    transfer: str
    index: int  # the sender's transfer's index in the sender's log, as the receiver recorded it
    payee: str
    minutes: int
    accepted: bool


@dataclass
class Direction:
    """What one direction (sender -> receiver) found: the minutes still in flight and what could not be checked."""

    in_flight: int = 0
    undecided: int = 0
    rejected_unreversed: int = 0
    beyond: int = 0  # answers naming sender entries past the sender's checkpoint
    recorded_beyond: int = 0  # acceptances the sender recorded, naming receiver entries past its checkpoint
    unrecorded: int = 0  # acceptances the sender has not recorded yet
    paired: int = 0
    answers: dict[str, Answer] = field(default_factory=dict)


def unpaired(side: Side, neighbour: str | None) -> dict[str, int]:
    """How many of the log's cross-network entries involve a network other than ``neighbour`` (every one when
    None), by that network's origin: what the pairing cannot check without that network's log."""
    peers = {a.id: a.peer for a in side.replay.all_accounts() if a.peer is not None}
    counts: dict[str, int] = {}
    for _, t in side.replay.crossnet:
        involved = {peers[x] for x in (t.payer, t.payee) if x in peers}
        if not involved or neighbour in involved:
            continue  # paired (or failed) with the neighbour's log
        origin = min(involved)
        counts[origin] = counts.get(origin, 0) + 1
    for _, entry in side.replay.other:
        if isinstance(entry, CrossnetRejected | CrossnetAccepted) and entry.origin != neighbour:
            counts[entry.origin] = counts.get(entry.origin, 0) + 1
    return counts


def describe_unpaired(found: dict[str, dict[str, int]]) -> tuple[int, str]:
    """The number of unpaired entries and their description, from counts by log and by network involved."""
    total = sum(n for counts in found.values() for n in counts.values())
    parts = [
        f"{n:,} in {log}'s log with {origin}" for log, counts in found.items() for origin, n in sorted(counts.items())
    ]
    return total, f"{total:,} cross-network entries unpaired, no log given to pair them with: {', '.join(parts)}"


def check_unpaired(checks: Checks, side: Side) -> None:
    """A log audited without its neighbours: its cross-network entries are reported as unpaired (a skip)."""
    counts = unpaired(side, None)
    if counts:
        checks.skip(CHECK, describe_unpaired({side.origin: counts})[1] + " (give one with --neighbour)")


def check_pairing(checks: Checks, a: Side, b: Side) -> None:
    """Record ``federation.pairing`` for two networks' logs."""
    a_clearing, b_clearing = a.clearing(b.origin), b.clearing(a.origin)
    found = {side.origin: counts for side, other in ((a, b), (b, a)) if (counts := unpaired(side, other.origin))}
    unpaired_total, unpaired_detail = describe_unpaired(found)
    if not a_clearing and not b_clearing:
        detail = f"{a.origin} and {b.origin} hold no clearing accounts for each other: nothing to pair"
        checks.passed(CHECK, detail + (f"; {unpaired_detail}" if unpaired_total else ""))
        return
    for side, clearing, other in ((a, a_clearing, b), (b, b_clearing, a)):
        if not clearing:
            checks.fail(CHECK, f"{side.origin} has no clearing account for {other.origin}, but {other.origin} has one")
    there = _direction(checks, a, b, a_clearing, b_clearing)
    back = _direction(checks, b, a, b_clearing, a_clearing)
    held = sum(_balance(a, x) for x in a_clearing) + sum(_balance(b, x) for x in b_clearing)
    expected = there.in_flight + back.in_flight
    if held != expected:
        checks.fail(
            CHECK,
            f"balance_{a.origin}(peer:{b.origin}) + balance_{b.origin}(peer:{a.origin}) = {held} minutes, "
            f"but the transfers still in flight account for {expected}",
        )
    pending = []
    for sender, receiver, d in ((a, b, there), (b, a, back)):
        if d.undecided:
            pending.append(f"{d.undecided} of {sender.origin}'s not yet decided by {receiver.origin}")
        if d.rejected_unreversed:
            pending.append(f"{d.rejected_unreversed} rejected by {receiver.origin}, not yet reversed")
        if d.beyond:
            pending.append(
                f"{d.beyond} answers by {receiver.origin} to entries past {sender.origin}'s checkpoint "
                "(audit again to check them)"
            )
        if d.unrecorded:
            pending.append(f"{d.unrecorded} accepted by {receiver.origin}, not yet recorded by {sender.origin}")
        if d.recorded_beyond:
            pending.append(
                f"{d.recorded_beyond} acceptances recorded by {sender.origin} of entries past {receiver.origin}'s "
                "checkpoint (audit again to check them)"
            )
    # The unpaired entries go before the balance: the balance and what is still pending end the detail, as before.
    detail = (
        f"{there.paired + back.paired:,} cross-network transfers paired; "
        + (f"{unpaired_detail}; " if unpaired_total else "")
        + f"balance_{a.origin}(peer:{b.origin}) + balance_{b.origin}(peer:{a.origin}) = {held}"
    )
    checks.passed(CHECK, detail + (f" ({'; '.join(pending)})" if pending else ""))


def _balance(side: Side, account: str) -> int:
    found = side.replay.account(account)
    return 0 if found is None else found.balance


def _direction(checks: Checks, sender: Side, receiver: Side, s_clearing: set[str], r_clearing: set[str]) -> Direction:
    """Pair the sender's transfers to the receiver with the receiver's answers."""
    out = Direction()

    def fail(side: Side, index: int, message: str) -> None:
        checks.fail(CHECK, message, index=index, log=side.origin)

    # The sender's side: payments out through its clearing account, and reversals of them.
    sent: dict[str, tuple[int, Transfer]] = {}
    reversals: dict[str, int] = {}
    for index, t in sender.replay.crossnet:
        if t.payee in s_clearing:
            if t.reverses is not None:
                fail(
                    sender,
                    index,
                    f"transfer {t.id} pays {receiver.origin}'s clearing account back: a decision "
                    "on a cross-network transfer is never reversed",
                )
            elif t.remote is None or t.remote.origin != receiver.origin or t.remote.account is None:
                fail(
                    sender,
                    index,
                    f"transfer {t.id} pays the clearing account for {receiver.origin} without "
                    f"naming a payee in {receiver.origin}",
                )
            else:
                sent[t.id] = (index, t)
        elif t.payer in s_clearing and t.reverses is not None:
            reversals[t.reverses] = index
        elif t.payer in s_clearing and not _answers(t, receiver.origin):
            fail(
                sender,
                index,
                f"transfer {t.id} takes minutes out of the clearing account for {receiver.origin} "
                "with neither a decision on its transfer nor a reversal",
            )

    # The receiver's side: its answers to the sender's transfers.
    for answer in _answers_in(receiver, sender.origin, r_clearing):
        earlier = out.answers.get(answer.transfer)
        if earlier is not None:
            fail(
                receiver,
                answer.at,
                f"{sender.origin}'s transfer {answer.transfer} is decided a second time "
                f"(entry {earlier.at} decided it)",
            )
            continue
        out.answers[answer.transfer] = answer
        found = sent.get(answer.transfer)
        verb = "accepts" if answer.accepted else "rejects"
        if found is None:
            if answer.index >= sender.size:
                out.beyond += 1
                if answer.accepted:  # the payment it answers is past the sender's checkpoint, not yet counted
                    out.in_flight -= answer.minutes
            else:
                fail(
                    receiver,
                    answer.at,
                    f"{verb} {sender.origin}'s transfer {answer.transfer} (entry "
                    f"{answer.index}), which {sender.origin}'s log does not hold",
                )
            continue
        index, t = found
        assert t.remote is not None
        if (answer.index, answer.payee, answer.minutes) != (index, t.remote.account, t.minutes):
            fail(
                receiver,
                answer.at,
                f"{verb} {sender.origin}'s transfer {t.id} as entry {answer.index}, "
                f"{answer.minutes} minutes to {answer.payee}; {sender.origin}'s log has it as entry {index}, "
                f"{t.minutes} minutes to {t.remote.account}",
            )

    # Every payment out: decisioned once, reversed exactly when rejected.
    for tid, (_, t) in sent.items():
        decision = out.answers.get(tid)
        reversed_at = reversals.pop(tid, None)
        if decision is None:
            if reversed_at is not None:
                fail(sender, reversed_at, f"reverses transfer {tid}, which {receiver.origin} has not rejected")
            else:
                out.undecided += 1
                out.in_flight += t.minutes
            continue
        out.paired += 1
        if decision.accepted and reversed_at is not None:
            fail(
                sender, reversed_at, f"reverses transfer {tid}, which {receiver.origin} accepted (entry {decision.at})"
            )
            out.in_flight -= t.minutes
        elif not decision.accepted and reversed_at is None:
            out.rejected_unreversed += 1
            out.in_flight += t.minutes
    for target, index in reversals.items():
        fail(
            sender,
            index,
            f"pays out of the clearing account for {receiver.origin} as the reversal of {target}, "
            f"which is no payment to {receiver.origin}",
        )
    _check_records(sender, receiver, out, fail, set(sent))
    return out


def _check_records(
    sender: Side, receiver: Side, out: Direction, fail: Callable[[Side, int, str], None], sent: set[str]
) -> None:
    """The sender's records of the receiver's acceptances: each names the receiver's acceptance of that transfer,
    at its index in the receiver's log, once."""
    recorded: dict[str, int] = {}
    for index, entry in sender.replay.other:
        if not (isinstance(entry, CrossnetAccepted) and entry.origin == receiver.origin):
            continue
        if entry.transfer in recorded:
            first = recorded[entry.transfer]
            fail(sender, index, f"records {receiver.origin}'s acceptance of {entry.transfer} again (entry {first})")
            continue
        recorded[entry.transfer] = index
        answer = out.answers.get(entry.transfer)
        if answer is None and entry.index >= receiver.size:
            out.recorded_beyond += 1
        elif answer is None or not answer.accepted or answer.at != entry.index:
            holds = "no decision on it" if answer is None else f"its {'acceptance' if answer.accepted else 'rejection'}"
            where = "" if answer is None else f" at entry {answer.at}"
            fail(
                sender,
                index,
                f"records {receiver.origin}'s acceptance of transfer {entry.transfer} as its entry {entry.index}; "
                f"{receiver.origin}'s log holds {holds}{where}",
            )
    out.unrecorded = sum(1 for t, a in out.answers.items() if a.accepted and t in sent and t not in recorded)


def _answers(t: Transfer, origin: str) -> bool:
    """The transfer is an acceptance of a transfer made in ``origin``'s log."""
    return t.reverses is None and t.remote is not None and t.remote.origin == origin and t.remote.transfer is not None


def _answers_in(receiver: Side, origin: str, clearing: set[str]) -> list[Answer]:
    """The receiver's decisions on ``origin``'s transfers, in log order."""
    found: list[Answer] = []
    for index, t in receiver.replay.crossnet:
        if t.payer in clearing and _answers(t, origin):
            assert t.remote is not None
            assert t.remote.transfer is not None
            found.append(
                Answer(
                    index,
                    t.remote.transfer,
                    -1 if t.remote.index is None else t.remote.index,
                    t.payee,
                    t.minutes,
                    accepted=True,
                )
            )
    for index, entry in receiver.replay.other:
        if isinstance(entry, CrossnetRejected) and entry.origin == origin:
            found.append(Answer(index, entry.transfer, entry.index, entry.payee, entry.minutes, accepted=False))
    found.sort(key=lambda answer: answer.at)
    return found
