"""The ledger service's Litestar app: routes, dependencies, lifespan and error mapping; nothing else."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from services.ledger import api, crossnet_api, log_api, pages, store
from services.ledger.access import Access
from services.ledger.appender import Appender
from services.ledger.tlog import CheckpointSigner
from shared.db import create_pool, migrate
from shared.http_metrics import MetricsController, request_metrics
from shared.logs import AppLogging
from shared.note import Signer, read_signer_key
from shared.problems import EXCEPTION_HANDLERS
from shared.settings import Settings
from shared.web import StrictRequest


def owner_secret(signer: Signer) -> bytes:
    """A secret only the network key's holder can derive (Ed25519 signatures are deterministic)."""
    return hashlib.sha256(signer.sign(b"timebank/ledger/owner-token-secret/v1")).digest()


def create_app(settings: Settings, *, database_url: str | None = None, signer: Signer | None = None) -> Litestar:
    """Build the ledger app. The pool, the migrations and the group-commit writer belong to its lifespan."""
    url = database_url or settings.database.url
    if url is None:
        raise ValueError("the ledger needs a database URL (settings.database.url)")
    key = signer or read_signer_key(settings.key_path)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The ledger keeps no session state on its connections (its locks and settings are per transaction), so
        # releasing one needs no reset round trip: every read request would otherwise pay a second one.
        pool = await create_pool(
            url, min_size=settings.database.min_pool, max_size=settings.database.max_pool, reset=False
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn, "ledger", store.MIGRATIONS)
            appender = Appender(
                pool,
                CheckpointSigner(key),
                default_floor=settings.ledger.default_floor,
                max_batch=settings.ledger.max_batch,
            )
            appender.start()
            app.state.pool = pool
            app.state.appender = appender
            try:
                yield
            finally:
                await appender.stop()
        finally:
            await pool.close()

    return Litestar(
        route_handlers=[
            api.AccountController,
            api.TransferController,
            log_api.LogController,
            crossnet_api.CrossnetController,
            api.health,
            api.ready,
            pages.audit_page,
            create_static_files_router(path="/static", directories=[pages.STATIC], name="ledger-static"),
            MetricsController,
        ],
        middleware=[request_metrics("ledger")],
        logging_config=AppLogging(),
        lifespan=[lifespan],
        state=State(
            {
                "access": Access(settings.ledger.tokens, owner_secret(key)),
                "origin": key.name,
                "verifier": key.verifier(),
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        # Request bodies are decoded by the type each handler declares for ``data``, strictly (see shared.web).
        request_class=StrictRequest,
        template_config=TemplateConfig(directory=pages.TEMPLATES, engine=JinjaTemplateEngine),
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(title="timebank ledger", version="0.1.0", path="/schema"),
    )
