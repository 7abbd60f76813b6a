"""Listings: offers and requests that their member publishes, edits, pauses, resumes or withdraws (a
coordinator may do all but edit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.exchange import events as ev
from services.exchange.domain.members import Actor
from shared.errors import Conflict, Forbidden, Invalid


@dataclass(slots=True)
class Listing:
    id: str
    member: str
    kind: str
    category: ev.Category
    status: Literal["active", "paused", "withdrawn"] = "active"
    expires: datetime | None = None


def fold_listing(listing_id: str, history: list[ev.AnyEvent]) -> Listing | None:
    listing: Listing | None = None
    for event in history:
        if isinstance(event, ev.ListingPublished):
            listing = Listing(listing_id, event.member, event.kind, event.category, expires=event.expires)
        elif listing is None:
            continue
        elif isinstance(event, ev.ListingEdited):
            listing.category, listing.expires = event.category, event.expires
        elif isinstance(event, ev.ListingPaused):
            listing.status = "paused"
        elif isinstance(event, ev.ListingResumed):
            listing.status = "active"
        elif isinstance(event, ev.ListingWithdrawn):
            listing.status = "withdrawn"
    return listing


def _own_listing(listing: Listing, actor: Actor) -> None:
    if listing.member != actor.member and not actor.coordinator:
        raise Forbidden("only the listing's member (or a coordinator) may change it")
    if listing.status == "withdrawn":
        raise Conflict(f"listing {listing.id} was withdrawn")


def edit_listing(
    listing: Listing,
    actor: Actor,
    *,
    category: ev.Category,
    shared: bool,
    expires: datetime,
    text: ev.Sealed,
    at: datetime,
) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    if listing.member != actor.member:
        raise Forbidden("only the listing's member may edit it; a coordinator may withdraw it")
    if expires <= at:
        raise Invalid("the expiry must be in the future")
    return [ev.ListingEdited(at=at, listing=listing.id, category=category, shared=shared, expires=expires, text=text)]


def pause_listing(listing: Listing, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    return [] if listing.status == "paused" else [ev.ListingPaused(at=at, listing=listing.id)]


def resume_listing(listing: Listing, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    return [] if listing.status == "active" else [ev.ListingResumed(at=at, listing=listing.id)]


def withdraw_listing(listing: Listing, actor: Actor, at: datetime) -> list[ev.AnyEvent]:
    _own_listing(listing, actor)
    by = actor.member if listing.member != actor.member else None
    return [ev.ListingWithdrawn(at=at, listing=listing.id, by=by)]
