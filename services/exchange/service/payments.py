"""Payments: hours sent to a member, donated to the community pot, or granted from it."""

from __future__ import annotations

import os

from services.exchange import events as ev
from services.exchange import outbox
from services.exchange.commands import (
    MakePayment,
)
from services.exchange.domain import payments
from services.exchange.domain.members import Actor, need_approved
from services.exchange.service.core import Core, member_states, memo_digest, new_id, now
from services.exchange.unit import Unit

DEFAULT_MEMOS = {"send": "hours sent", "donation": "donation to the pot", "grant": "grant from the pot"}


class PaymentCommands(Core):
    async def pay(self, actor: Actor, command: MakePayment) -> str:
        payment = new_id("pay")
        kind, payee, minutes, memo = command.kind, command.payee, command.minutes, command.memo

        async def work(u: Unit) -> str:
            u.new_stream(payment)
            members = await member_states(u, [actor.member, payee])
            if not actor.coordinator or kind != "grant":
                need_approved(members.get(actor.member), "send hours")
            text = memo or DEFAULT_MEMOS[kind]
            salt = os.urandom(16)
            sealed = await u.vault.seal(payment, ev.Memo(text=text, salt=salt))
            new = payments.pay(
                payment,
                actor,
                kind=kind,
                payee=payee,
                minutes=minutes,
                memo=sealed,
                digest=memo_digest(salt, text),
                at=now(),
            )
            made = new[0]
            assert isinstance(made, ev.PaymentMade)
            accounts = await self._accounts(u, [made.payer, made.payee], members)
            await u.save(payment, [], new)
            await u.enqueue(
                outbox.PostTransfer(
                    key=payment,
                    payer=accounts[made.payer],
                    payee=accounts[made.payee],
                    minutes=minutes,
                    memo_digest=made.memo_digest,
                    exchange_ref=payment,
                    stream=payment,
                )
            )
            return payment

        return await self._tx(work)
