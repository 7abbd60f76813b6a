"""Read models, derived from the events.

Each aggregate's row(s) are a function of its stream and the vault: ``project`` folds the stream, opens what can
still be opened, and upserts. Commands call it in the transaction that appended the events; ``rebuild`` calls the
very same function for every stream into emptied tables, which is why the two always agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from services.exchange import events as ev
from services.exchange.domain.exchanges import fold_exchange
from services.exchange.domain.listings import fold_listing
from services.exchange.domain.members import fold_member
from services.exchange.domain.payments import fold_payment
from services.exchange.eventstore import all_events
from services.exchange.store import ExchangeView, Line, Party
from services.exchange.vault import Vault
from services.exchange.writes import Write, compose
from shared.db import Connection, load_queries

Q = load_queries(Path(__file__).with_name("projections.sql"))

READ_MODELS = (
    "members",
    "invitations",
    "listings",
    "exchanges",
    "exchange_parties",
    "exchange_lines",
    "payments",
    "pot",
)


class Projection(NamedTuple):
    """The upserts that make one stream's read-model rows, and (for an exchange) the view those rows show."""

    writes: list[Write]
    view: ExchangeView | None = None


async def projection(vault: Vault, stream: str, history: list[ev.AnyEvent]) -> Projection:
    """What the read model of one stream is, given its whole history: the upserts that write it."""
    if stream.startswith("mem_"):
        return Projection([await _member(vault, stream, history)])
    if stream.startswith("lst_"):
        return Projection([await _listing(vault, stream, history)])
    if stream.startswith("ex_"):
        return await _exchange(vault, stream, history)
    if stream.startswith("pay_"):
        return Projection([await _payment(vault, stream, history)])
    if stream.startswith("inv_"):
        return Projection([_invitation(stream, history)])
    if stream == "pot":
        opened = [e.account for e in history if isinstance(e, ev.PotOpened)]
        return Projection([Write(Q["upsert_pot"], (opened[-1],))] if opened else [])
    raise ValueError(f"unknown stream {stream}")


async def project(conn: Connection, vault: Vault, stream: str, history: list[ev.AnyEvent]) -> None:
    """Bring the read model of one stream up to date with its whole history (one statement)."""
    writes = (await projection(vault, stream, history)).writes
    if writes:
        statement = compose(writes)
        await conn.execute(statement.sql, *statement.args)


async def rebuild(conn: Connection) -> int:
    """Empty the read models and project every stream again; returns the number of streams."""
    await conn.execute(Q["truncate_read_models"])
    await conn.execute(Q["clear_own_listings"])
    vault = Vault(conn)
    streams: dict[str, list[ev.AnyEvent]] = {}
    async for _, stream, event in all_events(conn):
        streams.setdefault(stream, []).append(event)
    for stream, history in streams.items():
        await project(conn, vault, stream, history)
    return len(streams)


async def _member(vault: Vault, member_id: str, history: list[ev.AnyEvent]) -> Write:
    member = fold_member(member_id, history)
    assert member is not None
    details: ev.MemberDetails | None = None
    joined = history[0].at
    approved_at = None
    for event in history:
        if isinstance(event, ev.MemberApplied | ev.ProfileUpdated):
            details = await vault.open(event.details, ev.MemberDetails)
        elif isinstance(event, ev.MemberApproved):
            approved_at = event.at
    if isinstance(history[0], ev.MemberApplied) and history[0].invitation:
        approved_at = history[0].at
    if member.status == "erased" or details is None:
        details = ev.MemberDetails(name="", email="")
    return Write(
        Q["upsert_member"],
        (
            member.id,
            member.status,
            member.role,
            member.account,
            details.name,
            details.email or None,
            details.skills,
            details.area,
            details.bio,
            details.password_hash or None,
            joined,
            approved_at,
        ),
    )


def _invitation(invitation_id: str, history: list[ev.AnyEvent]) -> Write:
    created = history[0]
    assert isinstance(created, ev.InvitationCreated)
    used_by = next((e.member for e in history if isinstance(e, ev.InvitationUsed)), None)
    return Write(
        Q["upsert_invitation"],
        (
            invitation_id,
            created.token_sha256,
            created.role,
            created.expires,
            created.by,
            created.at,
            used_by,
        ),
    )


async def _listing(vault: Vault, listing_id: str, history: list[ev.AnyEvent]) -> Write:
    listing = fold_listing(listing_id, history)
    assert listing is not None
    assert listing.expires is not None
    text: ev.ListingText | None = None
    shared = False
    for event in history:
        if isinstance(event, ev.ListingPublished | ev.ListingEdited):
            text = await vault.open(event.text, ev.ListingText)
            shared = event.shared
    if text is None:
        text = ev.ListingText(title="", description="")
    return Write(
        Q["upsert_listing"],
        (
            listing.id,
            listing.member,
            listing.kind,
            listing.category,
            text.title,
            text.description,
            text.area,
            text.availability,
            shared,
            listing.status,
            listing.expires,
            history[0].at,
            history[-1].at,
        ),
    )


async def _exchange(vault: Vault, exchange_id: str, history: list[ev.AnyEvent]) -> Projection:
    ex = fold_exchange(exchange_id, history)
    assert ex is not None
    assert ex.created is not None
    assert ex.updated is not None
    note: ev.Note | None = None
    memo: ev.Memo | None = None
    # Each provider's latest memo: the one on their lines (and in their lines' ledger transfers).
    memos: dict[str, str] = {}
    for event in history:
        if isinstance(event, ev.ExchangeProposed) and event.note is not None:
            note = await vault.open(event.note, ev.Note)
        elif isinstance(event, ev.TimeRecorded):
            memo = await vault.open(event.memo, ev.Memo)
            memos.pop(event.by, None)
            if memo is not None:
                memos[event.by] = memo.text
    answers = {m: ("accepted" if m in ex.accepted else "declined" if m in ex.declined else None) for m in ex.parties}
    answers[ex.proposer] = "proposer"
    sides = {**{m: "receiver" for m in ex.receivers}, **{m: "provider" for m in ex.providers}}
    view = ExchangeView(
        id=ex.id,
        status=ex.status,
        proposer=ex.proposer,
        listing=ex.listing,
        category=ex.category,
        note=note.text if note else None,
        memo=memo.text if memo else None,
        created_at=ex.created,
        updated_at=ex.updated,
        # In the order the read side reads them back (store.exchanges): providers first, then by member.
        parties=sorted(
            (Party(member=m, side=sides[m], answer=answers[m]) for m in ex.parties), key=lambda p: (p.side, p.member)
        ),
        lines=[
            Line(
                n=line.n,
                provider=line.provider,
                receiver=line.receiver,
                state=line.state,
                minutes=line.minutes,
                transfer=line.transfer,
                ledger_index=line.index,
                settled_at=line.settled_at,
            )
            for line in ex.lines
        ],
    )
    line_memos = [None if line.state in ("open", "declined") else memos.get(line.provider) for line in ex.lines]
    row = {
        "id": ex.id,
        "proposer": ex.proposer,
        "listing": ex.listing,
        "category": ex.category,
        "status": view.status,
        "note": view.note,
        "memo": view.memo,
        "created_at": ex.created,
        "updated_at": ex.updated,
    }
    parties = [{"exchange": ex.id, "member": p.member, "side": p.side, "answer": p.answer} for p in view.parties]
    lines = [
        {
            "exchange": ex.id,
            "n": line.n,
            "provider": line.provider,
            "receiver": line.receiver,
            "state": line.state,
            "minutes": line.minutes,
            "transfer": line.transfer,
            "ledger_index": line.ledger_index,
            "settled_at": line.settled_at,
            "memo": memo_text,
        }
        for line, memo_text in zip(view.lines, line_memos, strict=True)
    ]
    return Projection(
        [
            Write(Q["upsert_exchange"], ([row],), rows=True, json=True),
            Write(Q["upsert_exchange_parties"], (parties,), rows=True, json=True),
            Write(Q["upsert_exchange_lines"], (lines,), rows=True, json=True),
        ],
        view,
    )


async def _payment(vault: Vault, payment_id: str, history: list[ev.AnyEvent]) -> Write:
    made = history[0]
    assert isinstance(made, ev.PaymentMade)
    payment = fold_payment(payment_id, history)
    assert payment is not None
    settled = next((e for e in history if isinstance(e, ev.PaymentSettled)), None)
    memo = await vault.open(made.memo, ev.Memo)
    row = {
        "id": payment.id,
        "kind": payment.kind,
        "payer": payment.payer,
        "payee": payment.payee,
        "minutes": payment.minutes,
        "made_by": made.by,
        "status": payment.status,
        "memo": memo.text if memo else None,
        "transfer": settled.transfer if settled else None,
        "ledger_index": settled.index if settled else None,
        "created_at": made.at,
    }
    return Write(Q["upsert_payment"], ([row],), rows=True, json=True)
