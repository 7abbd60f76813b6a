"""Listings: publishing, reading, proposing an exchange on one, editing, pausing and withdrawing."""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from services.exchange import commands as cmd
from services.exchange import forms, store
from services.exchange.api import listings, schema
from services.exchange.domain.members import Actor
from services.exchange.forms import Visit, Visitor, optional, read_form
from services.exchange.pages.account import my_page
from shared.errors import DomainError, Invalid, NotFound


def _listing_data(form: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": form.get("kind", ""),
        "category": form.get("category", ""),
        "title": form.get("title", "").strip(),
        "description": form.get("description", ""),
        "area": form.get("area", "").strip(),
        "availability": form.get("availability", "").strip(),
        "shared": form.get("shared") == "yes",
        "expires": forms.expiry(form.get("expires", "")),
    }
    return data


@get("/listings/new", operation_id="newListingPage", include_in_schema=False)
async def new_listing_form(visit: Visitor, kind: FromQuery[str] = "offer") -> Template:
    visit.actor()
    return visit.page("listing_form.html", listing=None, kind=kind if kind in ("offer", "request") else "offer")


@post("/listings/new", operation_id="newListingForm", include_in_schema=False)
async def new_listing(visit: Visitor) -> Template | Redirect:
    actor = visit.actor()
    try:
        body = read_form(schema.ListingBody, _listing_data(visit.form))
        listing = await listings.publish_listing(visit.commands, actor, body)
    except DomainError as exc:
        return visit.failed(exc, "listing_form.html", listing=None, kind=visit.form.get("kind", "offer"))
    return visit.redirect(f"/listings/{listing}", "published")


@get("/listings/{listing_id:str}", operation_id="listingPage", include_in_schema=False)
async def listing_page(visit: Visitor, listing_id: FromPath[str]) -> Template:
    return visit.page("listing.html", listing=await listings.listing_view(visit.pool, listing_id))


@post("/listings/{listing_id:str}/propose", operation_id="proposeForm", include_in_schema=False)
async def propose(visit: Visitor, listing_id: FromPath[str]) -> Template | Redirect:
    """Propose an exchange on a listing: the proposer takes the other side of it."""
    actor = visit.actor()
    listing = await listings.listing_view(visit.pool, listing_id)
    try:
        body = read_form(schema.ProposalBody, {"listing": listing_id, "note": optional(visit.form, "note")})
        exchange = (await visit.commands.propose(actor, cmd.ProposeExchange(listing=listing_id, note=body.note))).id
    except DomainError as exc:
        return visit.failed(exc, "listing.html", listing=listing)
    return visit.redirect(f"/exchanges/{exchange}", "proposed")


async def _own_listing(visit: Visit, actor: Actor, listing_id: str) -> store.ListingView:
    listing = await listings.listing_view(visit.pool, listing_id)
    if listing.member != actor.member:
        raise NotFound(f"listing {listing_id} is not one of yours")
    return listing


@get("/listings/{listing_id:str}/edit", operation_id="editListingPage", include_in_schema=False)
async def edit_listing_form(visit: Visitor, listing_id: FromPath[str]) -> Template:
    listing = await _own_listing(visit, visit.actor(), listing_id)
    return visit.page("listing_form.html", listing=listing, kind=listing.kind)


@post("/listings/{listing_id:str}/edit", operation_id="editListingForm", include_in_schema=False)
async def edit_listing(visit: Visitor, listing_id: FromPath[str]) -> Template | Redirect:
    actor = visit.actor()
    listing = await _own_listing(visit, actor, listing_id)
    try:
        data = _listing_data(visit.form)
        data.pop("kind")
        await listings.edit_listing(visit.commands, actor, listing_id, read_form(schema.ListingPatch, data))
    except DomainError as exc:
        return visit.failed(exc, "listing_form.html", listing=listing, kind=listing.kind)
    return visit.redirect(f"/listings/{listing_id}", "edited")


@post("/listings/{listing_id:str}/status", operation_id="listingStatusForm", include_in_schema=False)
async def listing_status(visit: Visitor, listing_id: FromPath[str]) -> Template | Redirect:
    """Pause, resume or withdraw one of my listings (from my page)."""
    actor = visit.actor()
    action = visit.form.get("action", "")
    try:
        command = cmd.LISTING_STATUS.get(action)
        if command is None:
            raise Invalid("choose pause, resume or withdraw")
        await visit.commands.listing_status(actor, command(listing=listing_id))
    except DomainError as exc:
        return await my_page(visit, status=exc.status, error=exc.detail)
    return visit.redirect("/me", action)
