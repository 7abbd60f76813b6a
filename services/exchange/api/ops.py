"""Operations: health, readiness, and the refusal of paths no id can have."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from litestar import get

from services.exchange import store
from services.exchange.api.access import PoolDep
from shared.errors import NotFound
from shared.web import AnyRequest

# Checked on every request: one regular expression scan, not a Python loop over the path's characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def refuse_control_characters(request: AnyRequest) -> None:
    """No id has control characters in it, and PostgreSQL cannot even compare a NUL: refuse such paths up front."""
    if _CONTROL.search(request.scope["path"]):
        raise NotFound("there is nothing at a path with control characters in it")


@get("/health", operation_id="health", tags=["ops"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", operation_id="ready", tags=["ops"])
async def ready(pool: PoolDep) -> dict[str, Any]:
    """Ready once the database answers; ``outbox_pending`` counts commands not yet told to the ledger."""
    return {"status": "ready", "outbox_pending": await outbox_pending(pool)}


async def outbox_pending(pool: asyncpg.Pool) -> int:
    """How many commands the ledger has not been told yet."""
    async with pool.acquire() as conn:
        pending: int = await conn.fetchval(store.Q["outbox_pending"])
    return pending
