"""Payments: hours sent outright, member to member, as a donation to the pot, or as a coordinator's grant from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.exchange import events as ev
from services.exchange.domain.exchanges import MAX_MINUTES
from services.exchange.domain.members import Actor, need_coordinator
from shared.errors import Invalid


@dataclass(slots=True)
class Payment:
    id: str
    kind: str
    payer: str
    payee: str
    minutes: int
    memo_digest: str
    status: Literal["pending", "settled", "refused"] = "pending"


def fold_payment(payment_id: str, history: list[ev.AnyEvent]) -> Payment | None:
    payment: Payment | None = None
    for event in history:
        if isinstance(event, ev.PaymentMade):
            payment = Payment(payment_id, event.kind, event.payer, event.payee, event.minutes, event.memo_digest)
        elif payment is None:
            continue
        elif isinstance(event, ev.PaymentSettled):
            payment.status = "settled"
        elif isinstance(event, ev.PaymentRefused):
            payment.status = "refused"
    return payment


def pay(
    payment_id: str,
    actor: Actor,
    *,
    kind: ev.PaymentKind,
    payee: str,
    minutes: int,
    memo: ev.Sealed,
    digest: str,
    at: datetime,
) -> list[ev.AnyEvent]:
    if not 1 <= minutes <= MAX_MINUTES:
        raise Invalid(f"minutes must be between 1 and {MAX_MINUTES}")
    if kind == "grant":
        need_coordinator(actor)
        payer = ev.POT
    else:
        payer = actor.member
    if kind == "donation":
        payee = ev.POT
    if payer == payee:
        raise Invalid("you cannot send hours to yourself")
    return [
        ev.PaymentMade(
            at=at,
            payment=payment_id,
            kind=kind,
            payer=payer,
            payee=payee,
            minutes=minutes,
            by=actor.member,
            memo=memo,
            memo_digest=digest,
        )
    ]
