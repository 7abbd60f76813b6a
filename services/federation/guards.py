"""Who may use the federation's API: coordinators manage peers; coordinators, auditors and services read the
status. The peers' log copies and the witness are public, like a log."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from shared.bearer import TokenBook
from shared.errors import Forbidden, Unauthorized


def _role(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    tokens: TokenBook = connection.app.state.tokens
    caller = tokens.caller(connection.headers.get("authorization"))
    return None if caller is None else caller.role


async def require_coordinator(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: adding and removing peers is for coordinators."""
    role = _role(connection)
    if role is None:
        raise Unauthorized("managing peers needs a coordinator token")
    if role != "coordinator":
        raise Forbidden("managing peers needs a coordinator token")


async def require_reader(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the federation's status is for coordinators, auditors and the node's services."""
    role = _role(connection)
    if role is None:
        raise Unauthorized("the federation's status needs a coordinator, auditor or service token")
    if role not in ("coordinator", "auditor", "service", "federation"):
        raise Forbidden("the federation's status needs a coordinator, auditor or service token")
