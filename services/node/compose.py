"""One process serving several services: the apps wired together behind a small ASGI dispatcher by path prefix.

``timebank serve`` mounts the ledger at ``/ledger``, the federation at ``/federation`` (when NATS is configured)
and the exchange at ``/``. Each mounted app keeps its own
lifespan (pool, writer, outbox worker): the dispatcher starts them in order and stops them in reverse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import httpx

from services.exchange.app import create_app as create_exchange
from services.federation.app import create_app as create_federation
from services.ledger.app import create_app as create_ledger
from shared.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Any ASGI application (Litestar's own types are stricter than what it accepts).
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
# The ledger's address for services that reach it inside this process, without a socket.
IN_PROCESS_LEDGER = "http://ledger.in-process"


class _Lifespan:
    """Drives one app's lifespan protocol from the outside."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(app, scope))

    async def _run(self, app: ASGIApp, scope: Scope) -> None:
        await app(dict(scope), self._inbox.get, self._outbox.put)

    async def _step(self, event: str) -> None:
        await self._inbox.put({"type": f"lifespan.{event}"})
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            self._task.result()  # re-raises the app's error
            raise RuntimeError(f"an app ended during lifespan {event}")
        reply = getter.result()
        if reply["type"].endswith(".failed"):
            raise RuntimeError(reply.get("message") or f"lifespan {event} failed")

    async def startup(self) -> None:
        await self._step("startup")

    async def shutdown(self) -> None:
        await self._step("shutdown")
        await self._task


class Node:
    """Route requests by path prefix (longest first; "" catches the rest); run every app's lifespan."""

    def __init__(self, mounts: dict[str, ASGIApp]) -> None:
        self._mounts = sorted(mounts.items(), key=lambda m: len(m[0]), reverse=True)
        self._order = list(mounts.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path: str = scope.get("path", "")
        for prefix, app in self._mounts:
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                await app({**scope, "root_path": scope.get("root_path", "") + prefix}, receive, send)
                return
            if not prefix:
                await app(scope, receive, send)
                return
        raise RuntimeError(f"no app is mounted for {path}")

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        started: list[_Lifespan] = []
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            for app in self._order:
                lifespan = _Lifespan(app, scope)
                await lifespan.startup()
                started.append(lifespan)
        except Exception as exc:
            for lifespan in reversed(started):
                await lifespan.shutdown()
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        error = None
        for lifespan in reversed(started):
            try:
                await lifespan.shutdown()
            except Exception as exc:
                error = exc
        if error is not None:
            await send({"type": "lifespan.shutdown.failed", "message": str(error)})
        else:
            await send({"type": "lifespan.shutdown.complete"})


def build_node(settings: Settings, database_url: str, only: str | None = None) -> Any:
    """The app ``timebank serve`` runs: both services (the ledger under /ledger), or just one of them (``only``).

    Raises ValueError when the exchange's settings are incomplete.
    """
    if only == "ledger":
        return create_ledger(settings, database_url=database_url)
    if only == "exchange":
        host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::", "") else settings.http.host
        ledger_url = settings.exchange.ledger_url or f"http://{host}:{settings.http.port}/ledger"
        return create_exchange(settings, database_url=database_url, ledger_url=ledger_url)
    ledger = create_ledger(settings, database_url=database_url)
    in_process = httpx.ASGITransport(app=cast("Any", ledger))
    if settings.exchange.ledger_url:
        exchange = create_exchange(settings, database_url=database_url, ledger_url=settings.exchange.ledger_url)
    else:
        # Both in this process: the exchange's ledger client calls the ledger app directly, through the same HTTP
        # API (bodies, status codes, problems, tokens) but without a loopback socket, whose client-side cost
        # (httpx's connection pool) was larger than the ledger's own work per transfer.
        exchange = create_exchange(
            settings,
            database_url=database_url,
            ledger_url=IN_PROCESS_LEDGER,
            ledger_transport=in_process,
        )
    mounts: dict[str, ASGIApp] = {"/ledger": ledger}
    if settings.nats.url is not None:
        # The federation runs wherever NATS is configured (``timebank up`` always starts it).
        mounts["/federation"] = create_federation(
            settings, database_url=database_url, ledger_url=IN_PROCESS_LEDGER, ledger_transport=in_process
        )
    mounts[""] = exchange
    return Node(mounts)
