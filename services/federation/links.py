"""Our NATS connections to neighbours' servers, signed in with the credential each issued us."""

from __future__ import annotations

import asyncio
import contextlib

import nats
from nats.aio.client import Client as NatsClient

from services.federation import access
from services.federation.peers import Peer

# Waits between attempts to reach a neighbour that is down: growing up to the last.
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


def retry_wait(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row (at least 1)."""
    return RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]


async def connect(peer: Peer, our_name: str, purpose: str) -> NatsClient:
    """A connection to ``peer``'s NATS server that reconnects by itself; raises if the first attempt fails."""
    return await nats.connect(
        servers=[peer.nats_url],
        user=peer.nats_user,
        password=peer.nats_password,
        name=f"timebank {our_name} {purpose} {peer.name}",
        inbox_prefix=access.inbox_prefix(our_name).encode(),
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )


# How long closing a connection may take: nats-py's close() can wait on a connection that is reconnecting.
CLOSE_SECONDS = 5.0


async def close(nc: NatsClient) -> None:
    """Close ``nc`` (draining nothing), giving up after CLOSE_SECONDS so that a stop never hangs on it."""
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(nc.close(), CLOSE_SECONDS)
