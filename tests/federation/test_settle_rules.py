"""What a verified batch of a neighbour's log asks of our ledger (``settle.py``, pure): its payments to our members
to decide, its rejections of ours to reverse, and its acceptances of ours to record."""

from __future__ import annotations

from datetime import UTC, datetime

from services.federation import settle
from services.federation.settle import Accept, Decide, Reverse
from services.ledger.entries import CrossnetRejected, Remote, Transfer, entry_encoder, transfer_id

OURS = "timebank.test/riverside"
THEIRS = "timebank.test/hillside"
AT = datetime(2026, 12, 3, tzinfo=UTC)
MEMBER, THEIR_MEMBER, CLEARING = "acct_" + "a" * 20, "acct_" + "b" * 20, "acct_" + "c" * 20


def test_the_neighbours_answers_to_our_payments_ask_for_a_reversal_and_an_acceptance_record() -> None:
    entries = [
        # Their payment to our member, their acceptance of our "ok", their rejection of our "typo", a local transfer.
        Transfer(at=AT, id=transfer_id("in"), payer=THEIR_MEMBER, payee=CLEARING, minutes=5,
                 remote=Remote(origin=OURS, account=MEMBER)),
        Transfer(at=AT, id=transfer_id("acc"), payer=CLEARING, payee=THEIR_MEMBER, minutes=60,
                 remote=Remote(origin=OURS, transfer=transfer_id("ok"), index=12)),
        CrossnetRejected(at=AT, origin=OURS, transfer=transfer_id("typo"), index=13, payee=MEMBER, minutes=7,
                         reason="unknown_payee"),
        Transfer(at=AT, id=transfer_id("local"), payer=THEIR_MEMBER, payee=CLEARING, minutes=1),
    ]  # fmt: skip
    found, answers = settle.from_neighbour(OURS, THEIRS, 40, [entry_encoder.encode(e) for e in entries])
    assert found == [
        Decide(origin=THEIRS, transfer=transfer_id("in"), index=40, payee=MEMBER, minutes=5),
        Accept(origin=THEIRS, transfer=transfer_id("ok"), index=41),
        Reverse(origin=THEIRS, transfer=transfer_id("typo"), index=42, reason="unknown_payee"),
    ]
    assert [s.key for s in found] == [
        f"decide {THEIRS} {transfer_id('in')}",
        f"accept {transfer_id('ok')}",
        f"reverse {transfer_id('typo')}",
    ]
    assert [(a.transfer, a.kind) for a in answers] == [
        (transfer_id("ok"), "accepted"),
        (transfer_id("typo"), "rejected"),
    ]
    # Queued in the outbox as tagged JSON, and read back as the same commands.
    assert [settle.decoder.decode(settle.encoder.encode(s)) for s in found] == found
