"""Read models, derived from the events.

Each aggregate's row(s) are a function of its stream and the vault: ``project`` folds the stream, opens what can
still be opened, and upserts. Commands call it in the transaction that appended the events; ``rebuild`` calls the
very same function for every stream into emptied tables, which is why the two always agree.
"""

from __future__ import annotations

from pathlib import Path

from services.exchange import domain
from services.exchange import events as ev
from services.exchange.eventstore import all_events
from services.exchange.vault import Vault
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


async def project(conn: Connection, vault: Vault, stream: str, history: list[ev.AnyEvent]) -> None:
    """Bring the read model of one stream up to date with its whole history."""
    if stream.startswith("mem_"):
        await _member(conn, vault, stream, history)
    elif stream.startswith("lst_"):
        await _listing(conn, vault, stream, history)
    elif stream.startswith("ex_"):
        await _exchange(conn, vault, stream, history)
    elif stream.startswith("pay_"):
        await _payment(conn, vault, stream, history)
    elif stream.startswith("inv_"):
        await _invitation(conn, stream, history)
    elif stream == "pot":
        for event in history:
            if isinstance(event, ev.PotOpened):
                await conn.execute(Q["upsert_pot"], event.account)
    else:
        raise ValueError(f"unknown stream {stream}")


async def rebuild(conn: Connection) -> int:
    """Empty the read models and project every stream again; returns the number of streams."""
    await conn.execute("TRUNCATE " + ", ".join(f"exchange.{t}" for t in READ_MODELS))
    vault = Vault(conn)
    streams: dict[str, list[ev.AnyEvent]] = {}
    async for _, stream, event in all_events(conn):
        streams.setdefault(stream, []).append(event)
    for stream, history in streams.items():
        await project(conn, vault, stream, history)
    return len(streams)


async def _member(conn: Connection, vault: Vault, member_id: str, history: list[ev.AnyEvent]) -> None:
    member = domain.fold_member(member_id, history)
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
    await conn.execute(
        Q["upsert_member"],
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
    )


async def _invitation(conn: Connection, invitation_id: str, history: list[ev.AnyEvent]) -> None:
    created = history[0]
    assert isinstance(created, ev.InvitationCreated)
    used_by = next((e.member for e in history if isinstance(e, ev.InvitationUsed)), None)
    await conn.execute(
        Q["upsert_invitation"],
        invitation_id,
        created.token_sha256,
        created.role,
        created.expires,
        created.by,
        created.at,
        used_by,
    )


async def _listing(conn: Connection, vault: Vault, listing_id: str, history: list[ev.AnyEvent]) -> None:
    listing = domain.fold_listing(listing_id, history)
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
    await conn.execute(
        Q["upsert_listing"],
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
    )


async def _exchange(conn: Connection, vault: Vault, exchange_id: str, history: list[ev.AnyEvent]) -> None:
    ex = domain.fold_exchange(exchange_id, history)
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
    await conn.execute(
        Q["upsert_exchange"],
        ex.id,
        ex.proposer,
        ex.listing,
        ex.category,
        ex.status,
        note.text if note else None,
        memo.text if memo else None,
        ex.created,
        ex.updated,
        ex.parties,
        ["provider"] * len(ex.providers) + ["receiver"] * len(ex.receivers),
        [answers[m] for m in ex.parties],
        [line.n for line in ex.lines],
        [line.provider for line in ex.lines],
        [line.receiver for line in ex.lines],
        [line.state for line in ex.lines],
        [line.minutes for line in ex.lines],
        [line.transfer for line in ex.lines],
        [line.index for line in ex.lines],
        [line.settled_at for line in ex.lines],
        [None if line.state in ("open", "declined") else memos.get(line.provider) for line in ex.lines],
    )


async def _payment(conn: Connection, vault: Vault, payment_id: str, history: list[ev.AnyEvent]) -> None:
    made = history[0]
    assert isinstance(made, ev.PaymentMade)
    payment = domain.fold_payment(payment_id, history)
    assert payment is not None
    settled = next((e for e in history if isinstance(e, ev.PaymentSettled)), None)
    memo = await vault.open(made.memo, ev.Memo)
    await conn.execute(
        Q["upsert_payment"],
        payment.id,
        payment.kind,
        payment.payer,
        payment.payee,
        payment.minutes,
        made.by,
        payment.status,
        memo.text if memo else None,
        settled.transfer if settled else None,
        settled.index if settled else None,
        made.at,
    )
