"""The exchange page offers a member only what they may do next: buttons that the domain would refuse are not
shown (it decides again when they are used)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.exchange.actions import allowed_actions
from services.exchange.domain.members import Actor
from services.exchange.store import ExchangeView, Line, Party

ADA = Actor(member="mem_ada", role="member")  # provides the time
BEN = Actor(member="mem_ben", role="member")  # receives it
CLEO = Actor(member="mem_cleo", role="coordinator")  # no party to the exchange
DAN = Actor(member="mem_dan", role="member")  # no party either


def exchange(status: str, line_state: str, *, ben_answer: str | None = "accepted") -> ExchangeView:
    at = datetime(2026, 1, 5, tzinfo=UTC)
    return ExchangeView(
        id="ex_1",
        status=status,
        proposer=ADA.member,
        listing=None,
        category="other",
        note=None,
        memo=None,
        created_at=at,
        updated_at=at,
        parties=[
            Party(member=ADA.member, side="provider", answer="accepted"),
            Party(member=BEN.member, side="receiver", answer=ben_answer),
        ],
        lines=[
            Line(
                n=1,
                provider=ADA.member,
                receiver=BEN.member,
                state=line_state,
                minutes=60,
                transfer=None,
                ledger_index=None,
                settled_at=None,
            )
        ],
    )


def test_a_proposal_waits_for_the_invited_party_to_accept_or_decline() -> None:
    proposed = exchange("proposed", "open", ben_answer=None)
    assert allowed_actions(proposed, BEN) == {"accept", "decline"}
    assert allowed_actions(proposed, ADA) == {"cancel"}


def test_once_accepted_the_provider_records_time_and_either_party_may_cancel() -> None:
    accepted = exchange("accepted", "open")
    assert allowed_actions(accepted, ADA) == {"record", "cancel"}
    assert allowed_actions(accepted, BEN) == {"cancel"}


def test_recorded_time_is_confirmed_or_disputed_by_the_receiver_only() -> None:
    recorded = exchange("accepted", "recorded")
    assert allowed_actions(recorded, BEN) == {"confirm", "dispute"}
    assert allowed_actions(recorded, ADA) == {"record"}


def test_only_a_coordinator_is_offered_to_resolve_a_dispute() -> None:
    disputed = exchange("accepted", "disputed")
    assert allowed_actions(disputed, CLEO) == {"resolve"}
    assert allowed_actions(disputed, DAN) == set()
    assert allowed_actions(disputed, ADA) == set()


def test_nothing_is_offered_on_a_settled_exchange() -> None:
    done = exchange("completed", "settled")
    assert all(allowed_actions(done, who) == set() for who in (ADA, BEN, CLEO))
