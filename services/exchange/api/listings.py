"""Listings: offers and requests, published, searched, edited, paused, resumed and withdrawn."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from services.exchange import commands as cmd
from services.exchange import events as ev
from services.exchange import store
from services.exchange.api.access import CommandsDep, Me, PoolDep, signed_in
from services.exchange.api.schema import ListingBody, ListingPatch
from services.exchange.domain.members import Actor
from services.exchange.service import Commands
from shared.errors import Invalid, NotFound


class ListingController(Controller):
    path = "/api/listings"
    tags = ("listings",)

    @post("/", operation_id="createListing", status_code=HTTP_201_CREATED)
    async def create(
        self, data: JSONBody[ListingBody], commands: CommandsDep, pool: PoolDep, me: Me
    ) -> store.ListingView:
        return await listing_view(pool, await publish_listing(commands, signed_in(me), data))

    @get("/", operation_id="searchListings")
    async def search(
        self,
        pool: PoolDep,
        q: Annotated[str, QueryParameter(max_length=200)] = "",
        category: Annotated[ev.Category | None, QueryParameter(required=False)] = None,
        kind: Annotated[ev.Kind | None, QueryParameter(required=False)] = None,
        area: Annotated[str | None, QueryParameter(max_length=100, required=False)] = None,
        order: Annotated[Literal["relevance", "newest"], QueryParameter(required=False)] = "relevance",
        cursor: Annotated[str | None, QueryParameter(max_length=500, required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> store.ListingPage:
        """Active listings, ours and our neighbours'. Ranked by relevance when ``q`` is given, else newest first."""
        return await search_listings(
            pool, q=q, category=category, kind=kind, area=area, order=order, cursor=cursor, limit=limit
        )

    @get("/{listing_id:str}", operation_id="getListing")
    async def read(self, listing_id: FromPath[str], pool: PoolDep) -> store.ListingView:
        return await listing_view(pool, listing_id)

    @patch("/{listing_id:str}", operation_id="editListing")
    async def edit(
        self, listing_id: FromPath[str], data: JSONBody[ListingPatch], commands: CommandsDep, pool: PoolDep, me: Me
    ) -> store.ListingView:
        actor = signed_in(me)
        await edit_listing(commands, actor, listing_id, data)
        return await listing_view(pool, listing_id)

    @post("/{listing_id:str}/{action:str}", operation_id="changeListingStatus", status_code=HTTP_200_OK)
    async def status(
        self, listing_id: FromPath[str], action: FromPath[str], commands: CommandsDep, pool: PoolDep, me: Me
    ) -> store.ListingView:
        """``action`` is pause, resume or withdraw."""
        command = cmd.LISTING_STATUS.get(action)
        if command is None:
            raise NotFound(f"no such action {action!r}: pause, resume or withdraw")
        await commands.listing_status(signed_in(me), command(listing=listing_id))
        return await listing_view(pool, listing_id, withdrawn=action == "withdraw")

    @get("/mine", operation_id="myListings")
    async def mine(self, pool: PoolDep, me: Me) -> list[store.ListingView]:
        return await member_listings(pool, signed_in(me).member)


async def search_listings(
    pool: asyncpg.Pool,
    *,
    q: str,
    category: str | None,
    kind: str | None,
    area: str | None,
    order: str,
    cursor: str | None,
    limit: int,
) -> store.ListingPage:
    if "\x00" in q or (area and "\x00" in area):
        raise Invalid("search text cannot contain NUL characters")
    async with pool.acquire() as conn:
        return await store.search(
            conn, q=q, category=category, kind=kind, area=area, order=order, cursor=cursor, limit=limit
        )


async def publish_listing(commands: Commands, actor: Actor, body: ListingBody) -> str:
    text = ev.ListingText(
        title=body.title.strip(),
        description=body.description,
        area=body.area.strip(),
        availability=body.availability,
    )
    command = cmd.PublishListing(
        kind=body.kind, category=body.category, text=text, shared=body.shared, expires=body.expires
    )
    return await commands.publish(actor, command)


async def edit_listing(commands: Commands, actor: Actor, listing_id: str, body: ListingPatch) -> None:
    # An empty area or availability clears it (title and description cannot be empty).
    command = cmd.EditListing(
        listing=listing_id,
        category=body.category,
        title=body.title,
        description=body.description,
        area=body.area,
        availability=body.availability,
        shared=body.shared,
        expires=body.expires,
    )
    await commands.edit_listing(actor, command)


async def listing_view(pool: asyncpg.Pool, listing_id: str, *, withdrawn: bool = False) -> store.ListingView:
    """The listing as members see it; a withdrawn one is gone (``withdrawn``: show it, to whoever withdrew it)."""
    async with pool.acquire() as conn:
        view = await store.listing(conn, listing_id)
    if view is None or view.status == "hidden" or (view.status == "withdrawn" and not withdrawn):
        raise NotFound(f"listing {listing_id} does not exist")
    return view


async def member_listings(pool: asyncpg.Pool, member: str) -> list[store.ListingView]:
    """The member's own listings, withdrawn ones included."""
    async with pool.acquire() as conn:
        return await store.member_listings(conn, member)
