"""Listings: published, edited, paused, resumed and withdrawn."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.exchange import events as ev
from services.exchange.commands import (
    EditListing,
    ListingStatusCommand,
    PauseListing,
    PublishListing,
    ResumeListing,
    WithdrawListing,
)
from services.exchange.domain import listings
from services.exchange.domain.members import Actor, need_approved
from services.exchange.service.core import Core, exists, fields_of, member_states, new_id, now
from services.exchange.unit import Unit
from services.exchange.vault import Vault
from shared.errors import Conflict, Invalid

MAX_LISTING_DAYS = 365


class ListingCommands(Core):
    async def publish(self, actor: Actor, command: PublishListing) -> str:
        listing = new_id("lst")

        async def work(u: Unit) -> str:
            need_approved((await member_states(u, [actor.member])).get(actor.member), "list offers or requests")
            at = now()
            until = self._expiry(command.expires, at)
            sealed = await u.vault.seal(actor.member, command.text)
            published = ev.ListingPublished(
                at=at,
                listing=listing,
                member=actor.member,
                kind=command.kind,
                category=command.category,
                shared=command.shared,
                expires=until,
                text=sealed,
            )
            await u.save(listing, [], [published])
            return listing

        return await self._tx(work)

    async def edit_listing(self, actor: Actor, command: EditListing) -> None:
        listing_id, category, shared, expires = command.listing, command.category, command.shared, command.expires
        text_fields = ("title", "description", "area", "availability")
        text = {k: getattr(command, k) for k in text_fields if getattr(command, k) is not None}

        async def work(u: Unit) -> None:
            history = await u.load(listing_id)
            listing = exists(listings.fold_listing(listing_id, history), "listing", listing_id)
            current = await _listing_text(u.vault, history)
            if current is None:
                raise Conflict("this listing's text was erased")
            merged = ev.ListingText(**{**fields_of(current), **text})
            last = _last_version(history)
            at = now()
            new = listings.edit_listing(
                listing,
                actor,
                category=category or listing.category,
                shared=last.shared if shared is None else shared,
                expires=self._expiry(expires, at) if expires is not None else last.expires,
                text=await u.vault.seal(listing.member, merged),
                at=at,
            )
            await u.save(listing_id, history, new)

        await self._tx(work)

    async def listing_status(self, actor: Actor, command: ListingStatusCommand) -> None:
        """Pause, resume or withdraw a listing."""
        listing_id = command.listing

        async def work(u: Unit) -> None:
            history = await u.load(listing_id)
            listing = exists(listings.fold_listing(listing_id, history), "listing", listing_id)
            at = now()
            match command:
                case PauseListing():
                    new = listings.pause_listing(listing, actor, at)
                case ResumeListing():
                    new = listings.resume_listing(listing, actor, at)
                case WithdrawListing():
                    new = listings.withdraw_listing(listing, actor, at)
            await u.save(listing_id, history, new)

        await self._tx(work)

    def _expiry(self, expires: datetime | None, at: datetime) -> datetime:
        if expires is None:
            return at + timedelta(days=self.listing_days)
        if expires.tzinfo is None:
            raise Invalid("give the expiry with a time zone, e.g. 2026-12-31T18:00:00Z")
        if expires <= at:
            raise Invalid("the expiry must be in the future")
        if expires > at + timedelta(days=MAX_LISTING_DAYS):
            raise Invalid(f"a listing can run for at most {MAX_LISTING_DAYS} days")
        return expires


def _last_version(history: list[ev.AnyEvent]) -> ev.ListingPublished | ev.ListingEdited:
    return next(e for e in reversed(history) if isinstance(e, ev.ListingPublished | ev.ListingEdited))


async def _listing_text(vault: Vault, history: list[ev.AnyEvent]) -> ev.ListingText | None:
    return await vault.open(_last_version(history).text, ev.ListingText)
