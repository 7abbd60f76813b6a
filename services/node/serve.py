"""``timebank serve``: run the node's apps under uvicorn against a database and NATS the operator runs."""

from __future__ import annotations

from typing import Any

import uvicorn

from services.node.compose import build_node
from shared.settings import Settings


def server_config(settings: Settings, app: Any) -> uvicorn.Config:
    """How uvicorn serves the node's app."""
    return uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level="warning",
        access_log=False,
        log_config=None,  # uvicorn's own loggers go through the node's renderer (shared/logs.py)
        loop="uvloop",
        http="httptools",
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: any local process could then name
        # its own client address (and escape the per-address sign-in limit). Only configured proxies are believed.
        proxy_headers=bool(settings.http.trusted_proxies),
        forwarded_allow_ips=list(settings.http.trusted_proxies),
    )


def node_server(settings: Settings, database_url: str, only: str | None = None) -> uvicorn.Server:
    """The node's HTTP server, not yet started: the exchange at / and the ledger at /ledger, or just one of them."""
    try:
        app = build_node(settings, database_url, only)
    except ValueError as exc:
        raise SystemExit(f"timebank: {exc}") from None
    return uvicorn.Server(server_config(settings, app))


def serve(settings: Settings, database_url: str, only: str | None = None) -> None:
    """Serve the node until interrupted."""
    server = node_server(settings, database_url, only)
    print(f"timebank node {settings.origin} serving on http://{settings.http.host}:{settings.http.port}")
    server.run()


def run_serve(settings: Settings, only: str | None) -> int:
    """Serve against the configured database; refuse, saying what to do, without one or without a signing key."""
    if not settings.database.url:
        raise SystemExit("timebank: set database.url (or TIMEBANK_DATABASE__URL); `timebank up` runs embedded")
    if not settings.key_path.exists():
        raise SystemExit(f"timebank: no signing key at {settings.key_path}; create one with `timebank keygen`")
    serve(settings, settings.database.url, only)
    return 0
