"""The federation service's Litestar app: routes, lifespan (pool, NATS, publisher, replicators, witness,
cosignature collectors, settler) and error mapping; nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import nats
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.federation import api, cosigning, links, names, store
from services.federation.offer_publisher import OfferPublisher
from services.federation.peers import peer_from_settings
from services.federation.publisher import Publisher
from services.federation.settler import Settler
from services.federation.supervisor import Federation
from services.federation.witness import Witness
from services.federation.witness_protocol import STATUS_HEADER
from services.ledger.client import LedgerClient
from shared.bearer import TokenBook
from shared.db import create_pool, migrate
from shared.errors import Invalid
from shared.http_metrics import MetricsController, request_metrics
from shared.logs import AppLogging
from shared.note import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteError,
    Signer,
    Verifier,
    read_cosignature_signer_key,
    read_signer_key,
)
from shared.outbox import Wakeup
from shared.problems import EXCEPTION_HANDLERS
from shared.settings import Settings
from shared.web import StrictRequest

log = logging.getLogger(__name__)


def _witness_key(text: str, where: str) -> CosignatureVerifier:
    try:
        return CosignatureVerifier.from_text(text)
    except NoteError as exc:
        raise Invalid(f"{where}: {exc}") from None


def create_app(
    settings: Settings,
    *,
    database_url: str | None = None,
    ledger_url: str | None = None,
    ledger_transport: httpx.AsyncBaseTransport | None = None,
    witness_signer: CosignatureSigner | None = None,
    offers_signer: Signer | None = None,
) -> Litestar:
    """Build the federation app; its connections and workers belong to its lifespan. Raises ValueError (or
    shared.errors.Invalid for a peer or witness) when the settings cannot work.

    ``offers_signer``: the network's log key, which signs our shared offers (by default read from the key file,
    if there is one; without it, we publish no offers and still read our neighbours')."""
    url = database_url or settings.database.url
    if url is None:
        raise ValueError("the federation needs a database URL (settings.database.url)")
    if settings.nats.url is None:
        raise ValueError("the federation needs our NATS server's URL (nats.url)")
    if ledger_url is None:
        raise ValueError("the federation needs the ledger's URL")
    fed = settings.federation
    name = fed.name or names.network_name(settings.origin)
    for configured in fed.peers:
        peer_from_settings(configured)  # a peer the settings cannot describe stops the start, here
    signer = witness_signer or read_cosignature_signer_key(settings.witness_key_path)
    if offers_signer is None and settings.key_path.exists():
        offers_signer = read_signer_key(settings.key_path)
    external = [(w.url, _witness_key(w.key, f"witness {w.url}")) for w in fed.witnesses]
    nats_url, nats_user, nats_password = settings.nats.url, settings.nats.user, settings.nats.password

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await create_pool(url, min_size=1, max_size=settings.database.max_pool, reset=False)
        ledger = LedgerClient(ledger_url, fed.ledger_token or "", transport=ledger_transport)
        http = httpx.AsyncClient(timeout=cosigning.ANSWER_SECONDS)
        nc = None
        federation = None
        tasks: list[asyncio.Task[None]] = []
        try:
            async with pool.acquire() as conn:
                await migrate(conn, "federation", store.MIGRATIONS)
            await ledger.start()
            nc = await nats.connect(
                servers=[nats_url],
                user=nats_user,
                password=nats_password,
                name=f"timebank {name} federation",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
            )
            js = nc.jetstream()
            publisher = Publisher(
                pool, ledger, js, origin=settings.origin, name=name, poll=fed.poll_seconds, replicas=fed.stream_replicas
            )
            await publisher.prepare()
            offers = None
            if offers_signer is not None:
                offers = OfferPublisher(
                    pool,
                    js,
                    origin=settings.origin,
                    name=name,
                    signer=offers_signer,
                    poll=fed.poll_seconds,
                    replicas=fed.stream_replicas,
                )
                await offers.prepare()
                tasks.append(asyncio.create_task(offers.run(), name="publishing our shared offers"))
            witness_logs: dict[str, Verifier] = {}
            witness = Witness(pool, signer, witness_logs)
            await nc.subscribe(names.witness_subject(name), queue="witness", cb=_answering(nc, witness))
            wakeup = Wakeup()
            settler = Settler(pool, ledger, wakeup=wakeup)
            federation = Federation(
                settings,
                name=name,
                pool=pool,
                ledger=ledger,
                js=js,
                publisher=publisher,
                witness_logs=witness_logs,
                settling=wakeup,
                offers=offers is not None,
            )
            await federation.start()
            app.state.pool = pool
            app.state.publisher = publisher
            app.state.witness = witness
            app.state.ledger = ledger
            app.state.federation = federation
            settler.start()
            tasks.append(asyncio.create_task(publisher.run(), name="federation publisher"))
            for witness_url, key in external:
                target = cosigning.WitnessTarget(key, cosigning.over_http(witness_url, http))
                collector = cosigning.Collector(pool, ledger, target, published=publisher.subscribe())
                tasks.append(asyncio.create_task(collector.run(), name=f"cosigning by {witness_url}"))
            try:
                yield
            finally:
                await _within("stopping the settler", settler.stop())
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await _within(f"stopping {task.get_name()}", task)
            if federation is not None:
                await _within("stopping the peers' tasks", federation.close())
            if nc is not None:
                await links.close(nc)
            await http.aclose()
            await ledger.close()
            if not await _within("closing the database pool", pool.close()):
                pool.terminate()

    return Litestar(
        route_handlers=[api.FederationController, api.PeerController, api.WitnessController, MetricsController],
        lifespan=[lifespan],
        state=State(
            {
                "origin": settings.origin,
                "name": name,
                "witness_key": signer.verifier(),
                "tokens": TokenBook(settings.ledger.tokens),
                "public_nats_url": fed.public_nats_url or settings.nats.url,
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        # Request bodies are decoded by the type each handler declares for ``data``, strictly (see shared.web).
        request_class=StrictRequest,
        middleware=[request_metrics("federation")],
        logging_config=AppLogging(),
        request_max_body_size=settings.http.max_body_bytes,
        openapi_config=OpenAPIConfig(title="timebank federation", version="0.1.0", path="/schema"),
    )


async def _within(what: str, step: Awaitable[object], seconds: float = 15.0) -> bool:
    """Run one step of stopping, but never for long: a stop that hangs would keep the whole node from stopping.
    False (and a warning naming the step) if it did not finish in time."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        log.warning("%s took more than %.0f s; going on without it", what, seconds)
        return False
    return True


def _answering(nc: NatsClient, witness: Witness) -> Callable[[Msg], Awaitable[None]]:
    """Our witness over NATS request/reply: the answer's status travels in a header."""

    async def answer(msg: Msg) -> None:
        if not msg.reply:
            return
        reply = await witness.add_checkpoint(msg.data)
        await nc.publish(msg.reply, reply.body, headers={STATUS_HEADER: str(reply.status)})

    return answer
