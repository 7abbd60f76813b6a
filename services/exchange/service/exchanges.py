"""Exchanges: proposed, answered, time recorded, confirmed or disputed, resolved; confirmed lines go to the ledger."""

from __future__ import annotations

import os
from typing import Any

from services.exchange import events as ev
from services.exchange import outbox
from services.exchange.auth import Credentials, Session, principal_of
from services.exchange.commands import (
    AcceptExchange,
    CancelExchange,
    ConfirmExchange,
    DeclineExchange,
    DisputeExchange,
    ExchangeCommand,
    ProposeExchange,
    RecordTime,
    ResolveDispute,
)
from services.exchange.domain import exchanges
from services.exchange.domain.members import Actor, Member, need_approved
from services.exchange.eventstore import Loaded
from services.exchange.service.core import Core, exists, member_of, memo_digest, new_id, now
from services.exchange.store import ExchangeView, Q, unzip
from services.exchange.unit import Unit
from shared.errors import Conflict, Invalid, NotFound, Unauthorized


class ExchangeCommands(Core):
    async def propose(self, who: Actor | Credentials, command: ProposeExchange) -> ExchangeView:
        """Propose on a listing (the proposer takes the other side), or a direct/group exchange.

        ``who``: the acting member, or the credentials they came with (looked up with what the proposal reads)."""
        exchange = new_id("ex")
        listing, providers, receivers = command.listing, command.providers, command.receivers
        note, category = command.note, command.category
        named = [*(providers or []), *(receivers or [])]

        async def work(u: Unit) -> ExchangeView:
            u.new_stream(exchange)
            # The listing, every member who would take part and the caller's session, in one round trip.
            known = [who.member] if isinstance(who, Actor) else []
            rows = await u.conn.fetch(Q["proposal"], listing, [*known, *named], _token(who))
            actor = _actor(who, rows[0])
            members = {r["id"]: member_of(r) for r in rows if r["id"] is not None}
            need_approved(members.get(actor.member), "propose exchanges")
            provs, recs, cat = list(providers or []), list(receivers or []), category or "other"
            if listing is not None:
                found = rows[0]
                if found["owner"] is None:
                    raise NotFound(f"listing {listing} does not exist")
                if found["listing_status"] != "active" or found["expires"] <= now():
                    raise Conflict(f"listing {listing} is not open for exchanges")
                if found["owner"] == actor.member:
                    raise Invalid("you cannot propose an exchange on your own listing")
                if providers or receivers:
                    raise Invalid("on a listing, the parties are the listing's member and you")
                owner = found["owner"]
                provs, recs = ([owner], [actor.member]) if found["kind"] == "offer" else ([actor.member], [owner])
                cat = found["category"]
            for party in {*provs, *recs} - {actor.member}:
                need_approved(members.get(party), "take part in exchanges")
            note_sealed = await u.vault.seal(exchange, ev.Note(text=note)) if note else None
            new = exchanges.propose(
                exchange,
                actor,
                providers=provs,
                receivers=recs,
                listing=listing,
                category=cat,
                note=note_sealed,
                at=now(),
            )
            await u.save(exchange, [], new)
            await u.flush()
            return u.views[exchange]

        return await self._tx(work)

    async def act(self, who: Actor | Credentials, command: ExchangeCommand) -> ExchangeView:
        """Accept, decline, cancel, record time, confirm, dispute or resolve: ``command`` says which.

        ``who``: the acting member, or the credentials they came with (looked up with the exchange). Returns the
        exchange as this command left it (as its read model then reads)."""
        exchange_id = command.exchange

        async def work(u: Unit) -> ExchangeView:
            # Confirming and resolving settle lines: the parties' ledger accounts come with the stream.
            settles = isinstance(command, ConfirmExchange | ResolveDispute)
            actor, members = await _read_exchange(u, exchange_id, who, parties=settles)
            history = await u.load(exchange_id)
            ex = exists(exchanges.fold_exchange(exchange_id, history), "exchange", exchange_id)
            at = now()
            match command:
                case AcceptExchange():
                    new = exchanges.accept(ex, actor, at)
                case DeclineExchange():
                    new = exchanges.decline(ex, actor, at)
                case CancelExchange():
                    new = exchanges.cancel(ex, actor, at)
                case RecordTime(minutes=minutes, memo=memo):
                    text = memo or f"exchange {exchange_id}"
                    salt = os.urandom(16)
                    sealed = await u.vault.seal(exchange_id, ev.Memo(text=text, salt=salt))
                    new = exchanges.record(ex, actor, minutes, sealed, memo_digest(salt, text), at)
                case ConfirmExchange():
                    new = exchanges.confirm(ex, actor, at)
                case DisputeExchange(reason=reason):
                    new = exchanges.dispute(ex, actor, await u.vault.seal(exchange_id, ev.Note(text=reason)), at)
                case ResolveDispute(minutes=minutes):
                    new = exchanges.resolve(ex, actor, minutes, at)
            full = await u.save(exchange_id, history, new)
            after = exchanges.fold_exchange(exchange_id, full)
            assert after is not None
            await self._settle(u, after, members)
            await u.flush()
            return u.views[exchange_id]

        return await self._tx(work)

    async def _settle(self, u: Unit, ex: exchanges.Exchange, members: dict[str, Member]) -> None:
        """Tell the ledger about every confirmed line (the outbox ignores a key it already has)."""
        confirmed = [line for line in ex.live_lines if line.state == "confirmed"]
        if not confirmed:
            return
        parties = [p for line in confirmed for p in (line.receiver, line.provider)]
        accounts = await self._accounts(u, parties, members)
        for line in confirmed:
            await u.enqueue(
                outbox.PostTransfer(
                    key=ex.key(line),
                    payer=accounts[line.receiver],
                    payee=accounts[line.provider],
                    minutes=line.minutes,
                    memo_digest=line.memo_digest,
                    exchange_ref=ex.id,
                    stream=ex.id,
                    line=line.n,
                )
            )


async def _read_exchange(
    u: Unit, exchange_id: str, who: Actor | Credentials, *, parties: bool
) -> tuple[Actor, dict[str, Member]]:
    """Read the exchange's stream for ``u.load``, the caller's session and (``parties``) the parties as
    ``member_states`` would, in one round trip: the acting member, and those parties."""
    query = Q["exchange_for_settling" if parties else "exchange_for_command"]
    rows = await u.conn.fetch(query, exchange_id, _token(who))
    first = rows[0]
    actor = _actor(who, first)
    events = [r for r in rows if r["version"] is not None]
    history = [ev.decoder.decode(r["data"]) for r in events]
    u.loaded_with(exchange_id, Loaded(events[-1]["version"] if events else 0, history, first["key"]))
    if not parties or first["ids"] is None:
        return actor, {}
    found = unzip(first, {"id": "ids", "status": "statuses", "role": "roles", "account": "accounts"})
    return actor, {p["id"]: Member(**p) for p in found}


def _token(who: Actor | Credentials) -> str | None:
    """The session token to look up with a command's first read, if the caller came with one."""
    return who.token_sha256 if isinstance(who, Credentials) else None


def _actor(who: Actor | Credentials, row: Any) -> Actor:
    """The acting member: given, or the one whose session ``row`` holds (refused as ``Gate.resolve`` would)."""
    if isinstance(who, Actor):
        return who
    principal = principal_of(who, Session.of(row, "session_"))
    if principal is None:
        raise Unauthorized("sign in first")
    return principal.actor
