"""Finding listings: the home page searches ours and our neighbours'."""

from __future__ import annotations

from urllib.parse import urlencode

from litestar import get
from litestar.params import FromQuery
from litestar.response import Template

from services.exchange import events as ev
from services.exchange.api import listings
from services.exchange.forms import Visitor
from shared.errors import DomainError

SEARCH_PAGE = 20


@get("/", operation_id="homePage", include_in_schema=False)
async def home(
    visit: Visitor,
    q: FromQuery[str] = "",
    category: FromQuery[str] = "",
    kind: FromQuery[str] = "",
    area: FromQuery[str] = "",
    order: FromQuery[str] = "",
    cursor: FromQuery[str] = "",
) -> Template:
    """Search (text, category, kind, area; best match or newest) over our listings and our neighbours'."""
    search = {
        "q": q.strip()[:200],
        "category": category if category in ev.CATEGORIES else "",
        "kind": kind if kind in ("offer", "request") else "",
        "area": area.strip()[:100],
        "order": order if order in ("relevance", "newest") else ("relevance" if q.strip() else "newest"),
    }
    try:
        found = await listings.search_listings(
            visit.pool,
            q=search["q"],
            category=search["category"] or None,
            kind=search["kind"] or None,
            area=search["area"] or None,
            order=search["order"],
            cursor=cursor or None,
            limit=SEARCH_PAGE,
        )
    except DomainError as exc:
        return visit.failed(exc, "home.html", search=search, listings=[], more=None, first=True)
    more = None
    if found.next:
        more = "?" + urlencode({k: v for k, v in {**search, "cursor": found.next}.items() if v})
    return visit.page("home.html", search=search, listings=found.items, more=more, first=not cursor)
