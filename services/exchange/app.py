"""The exchange service's Litestar app: routes, dependencies, lifespan and error mapping; nothing else."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from services.exchange import forms, pages, store
from services.exchange.api import access, exchanges, listings, members, ops, payments
from services.exchange.auth import Gate
from services.exchange.outbox import OutboxWorker
from services.exchange.service import Commands
from services.ledger.client import LedgerClient
from shared.db import create_pool, migrate
from shared.http_metrics import MetricsController, request_metrics
from shared.logs import AppLogging
from shared.outbox import Wakeup
from shared.problems import EXCEPTION_HANDLERS
from shared.settings import Settings
from shared.web import StrictRequest

ROUTES: list[ControllerRouterHandler] = [
    members.MemberController,
    listings.ListingController,
    exchanges.ExchangeController,
    payments.PaymentController,
    payments.AccountController,
    payments.CoordinatorController,
    ops.health,
    ops.ready,
    pages.ROUTER,
    create_static_files_router(path="/static", directories=[forms.STATIC], name="exchange-static"),
    MetricsController,
]


def create_app(
    settings: Settings,
    *,
    database_url: str | None = None,
    ledger_url: str | None = None,
    ledger_transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """Build the exchange app. The pool, the ledger client and the outbox worker belong to its lifespan.

    ``ledger_transport``: how the ledger client reaches ``ledger_url``; the node passes the ledger app itself when
    both run in one process (the same HTTP API, without a socket in between)."""
    url = database_url or settings.database.url
    if url is None:
        raise ValueError("the exchange needs a database URL (settings.database.url)")
    ledger = ledger_url or settings.exchange.ledger_url
    if ledger is None:
        raise ValueError("the exchange needs the ledger's URL (exchange.ledger_url)")
    token = settings.exchange.ledger_token
    if not token:
        raise ValueError("the exchange needs a ledger service token (exchange.ledger_token)")
    ex = settings.exchange
    # The sign-in limiter's keyed hashes take their key from a secret the exchange holds outside its database.
    limiter_secret = hashlib.sha256(b"timebank/exchange/sign-in-limiter/v1\0" + token.encode()).digest()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The exchange keeps no session state on its connections, so releasing one needs no reset round trip.
        pool = await create_pool(
            url, min_size=settings.database.min_pool, max_size=settings.database.max_pool, reset=False
        )
        client = LedgerClient(ledger, token, transport=ledger_transport)
        try:
            async with pool.acquire() as conn:
                await migrate(conn, "exchange", store.MIGRATIONS)
            await client.start()
            # Made first and given to both: commands wake the worker after enqueueing, the worker waits on it.
            wakeup = Wakeup()
            commands = Commands(
                pool,
                wake=wakeup.set,
                listing_days=ex.listing_days,
                invitation_days=ex.invitation_days,
                limiter_secret=limiter_secret,
            )
            # Under load, rounds start 50 ms apart, each taking the confirmations of those 50 ms at once.
            worker = OutboxWorker(
                pool,
                client,
                commands.on_outcome,
                on_outcomes=commands.on_outcomes,
                wakeup=wakeup,
                lanes=4,
                linger=0.05,
            )
            worker.start()
            app.state.pool = pool
            app.state.ledger = client
            app.state.commands = commands
            await commands.ensure_pot()
            try:
                yield
            finally:
                await worker.stop()
        finally:
            await client.close()
            await pool.close()

    # The lifespan adds the pool, the ledger client and the commands to this state; the dependencies read it.
    state = State(
        {
            "gate": Gate(
                settings.ledger.tokens,
                session_days=ex.session_days,
                max_failures=ex.login_max_failures,
                max_failures_per_address=ex.login_max_failures_per_address,
                window_seconds=ex.login_window_seconds,
                limiter_secret=limiter_secret,
            ),
            "secure_cookies": ex.secure_cookies,
            "origin": settings.origin,
        }
    )
    return Litestar(
        route_handlers=ROUTES,
        dependencies=access.dependencies(state),
        lifespan=[lifespan],
        state=state,
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=ops.refuse_control_characters,
        middleware=[request_metrics("exchange")],
        logging_config=AppLogging(),
        # Request bodies are decoded by the type each handler declares for ``data``, strictly (see shared.web).
        request_class=StrictRequest,
        template_config=TemplateConfig(
            directory=forms.TEMPLATES, engine=JinjaTemplateEngine, engine_callback=forms.configure
        ),
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(title="timebank exchange", version="0.1.0", path="/schema"),
    )
