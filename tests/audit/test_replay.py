"""The auditor's replay on its own: where it names a failure when some entries could not be read before it."""

from __future__ import annotations

from datetime import UTC, datetime

from services.audit.replay import Replay
from services.audit.report import Checks
from services.ledger.entries import AccountOpened, CrossnetAccepted, LogEntry, Transfer

AT = datetime(2026, 11, 21, tzinfo=UTC)


def opened(account: str) -> AccountOpened:
    return AccountOpened(at=AT, account=account, kind="member", floor=-600)


def transfer(tid: str, payer: str = "acct_a", payee: str = "acct_b", **more: str) -> Transfer:
    return Transfer(at=AT, id=tid, payer=payer, payee=payee, minutes=30, **more)


def no_reads(indexes: list[int]) -> dict[int, LogEntry | None]:
    return {}


def failures(checks: Checks, check: str) -> list[tuple[int | None, str]]:
    return [(f.index, f.message) for r in checks.results() if r.id == check for f in r.failures]


def test_repeated_id_is_named_at_its_index_past_unreadable_entries_and_other_entries() -> None:
    checks = Checks()
    replay = Replay(checks)
    replay.replay([opened("acct_a"), opened("acct_b"), transfer("tr_1"), None, transfer("tr_2")])
    replay.size = 300  # entries 5..299 could not be read (a bundle is missing)
    replay.replay([transfer("tr_3"), transfer("tr_4", payer="acct_nobody"), opened("acct_c"), transfer("tr_1")])
    replay.finish(no_reads)
    assert replay.transfer_count == 4
    assert failures(checks, "ledger.unique_ids") == [(303, "transfer id tr_1 was already used by entry 2")]


def test_reversal_is_checked_against_the_index_of_the_transfer_it_names() -> None:
    checks = Checks()
    replay = Replay(checks)
    replay.replay([opened("acct_a"), opened("acct_b"), None, transfer("tr_1")])
    replay.size = 10
    replay.replay([transfer("tr_2", payer="acct_b", payee="acct_a", reverses="tr_1")])
    asked: list[list[int]] = []

    def read(indexes: list[int]) -> dict[int, LogEntry | None]:
        asked.append(indexes)
        return {3: transfer("tr_1")}

    replay.finish(read)
    assert asked == [[3]]
    assert failures(checks, "ledger.reversals") == []


class Reader:
    """Entries by index, as a scan's ``read`` gives them; remembers what it was asked."""

    def __init__(self, entries: dict[int, LogEntry]) -> None:
        self.entries = entries
        self.asked: list[list[int]] = []

    def __call__(self, indexes: list[int]) -> dict[int, LogEntry | None]:
        self.asked.append(indexes)
        return {i: self.entries[i] for i in indexes if i in self.entries}


def test_a_reversal_near_what_it_undoes_is_checked_with_the_transfer_read_while_at_hand() -> None:
    checks = Checks()
    replay = Replay(checks)
    original = transfer("tr_1")
    replay.replay([opened("acct_a"), opened("acct_b"), original])
    near = Reader({2: original})
    replay.settle(near)
    replay.replay([transfer("tr_2", payer="acct_b", payee="acct_a", reverses="tr_1")])
    replay.replay([Transfer(at=AT, id="tr_3", payer="acct_b", payee="acct_a", minutes=31, reverses="tr_1")])
    replay.settle(near)
    again = Reader({})
    replay.finish(again)
    assert near.asked == [[2]]
    assert again.asked == []
    assert failures(checks, "ledger.reversals") == [
        (4, "transfer tr_3 reverses tr_1 (entry 2) a second time; entry 3 did"),
        (4, "transfer tr_3 does not undo tr_1 (entry 2): it must pay 30 minutes from acct_b back to acct_a"),
    ]


def test_a_reversal_far_from_what_it_undoes_is_checked_with_the_transfer_read_again() -> None:
    checks = Checks()
    replay = Replay(checks)
    near = Reader({})
    replay.replay([opened("acct_a"), opened("acct_b"), transfer("tr_1")])
    replay.settle(near)
    for n in range(2, 5):  # three more stretches: tr_1 is no longer at hand
        replay.replay([transfer(f"tr_{n}")])
        replay.settle(near)
    replay.replay([transfer("tr_9", payer="acct_b", payee="acct_a", reverses="tr_1")])
    replay.settle(near)
    again = Reader({2: transfer("tr_1")})
    replay.finish(again)
    assert near.asked == []
    assert again.asked == [[2]]
    assert failures(checks, "ledger.reversals") == []


def test_a_reversal_that_names_a_repeated_id_is_checked_against_its_first_use() -> None:
    checks = Checks()
    replay = Replay(checks)
    replay.replay([opened("acct_a"), opened("acct_b"), transfer("tr_1"), transfer("tr_2")])
    replay.settle(Reader({}))
    replay.replay([transfer("tr_1", payer="acct_b", payee="acct_a")])
    replay.replay([transfer("tr_5", payer="acct_b", payee="acct_a", reverses="tr_1")])
    again = Reader({2: transfer("tr_1")})
    replay.finish(again)
    assert failures(checks, "ledger.unique_ids") == [(4, "transfer id tr_1 was already used by entry 2")]
    assert failures(checks, "ledger.reversals") == []
    assert [2] in again.asked


def test_a_recorded_acceptance_moves_no_minutes_and_is_kept_for_the_pairing() -> None:
    checks = Checks()
    replay = Replay(checks)
    record = CrossnetAccepted(at=AT, origin="timebank.test/b", transfer="tr_1", index=12)
    replay.replay([opened("acct_a"), opened("acct_b"), transfer("tr_1"), record])
    replay.finish(no_reads)
    assert replay.balances() == {"acct_a": -30, "acct_b": 30}
    assert replay.other == [(3, record)]
    assert replay.transfer_count == 1
    assert not [r for r in checks.results() if r.failures]
