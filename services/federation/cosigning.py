"""Collecting cosignatures of our log: each new checkpoint goes to every witness we name, with a consistency proof
from the size that witness last cosigned; its verified cosignatures go to our ledger, which serves them with the
checkpoint.

A witness is a neighbour (over NATS, on the neighbour's server) or any C2SP tlog-witness (over HTTP, by URL). When
a witness answers 409 with another size, the next request starts from that size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
from nats.aio.client import Client as NatsClient

from services.federation import links, metrics, names, store
from services.federation.peers import Peer
from services.federation.witness_protocol import (
    CONTENT_TYPE,
    STATUS_HEADER,
    Answer,
    checkpoint_text,
    encode_request,
    size_of_conflict,
)
from services.ledger.client import LedgerClient, LedgerError
from shared.note import CosignatureVerifier, NoteError, parse_signature_line, verify_cosignature

log = logging.getLogger(__name__)

# Seconds to wait for a witness's answer.
ANSWER_SECONDS = 5.0
# While nothing new is published, the latest checkpoint is looked at this often all the same.
QUIET_SECONDS = 1.0

Send = Callable[[bytes], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class WitnessTarget:
    """A witness we ask to cosign our log: its cosignature key, and how to send it a request."""

    key: CosignatureVerifier
    send: Send


class Collector:
    """Keeps one witness's cosignature on our latest checkpoint."""

    def __init__(
        self, pool: asyncpg.Pool, ledger: LedgerClient, target: WitnessTarget, *, published: asyncio.Event
    ) -> None:
        """``published``: set by the publisher when our log has new checkpoints (checked at least every second)."""
        self._pool = pool
        self._ledger = ledger
        self._target = target
        self._published = published
        self._gauge = metrics.COSIGNED.labels(witness=target.key.name)

    async def run(self) -> None:
        while True:
            try:
                if not await self.round():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._published.wait(), QUIET_SECONDS)
                    self._published.clear()
            except Exception as exc:
                log.warning("asking %s to cosign failed (%s); trying again", self._target.key.name, exc)
                await asyncio.sleep(QUIET_SECONDS)

    async def round(self) -> bool:
        """Ask for a cosignature of our latest checkpoint if the witness has not cosigned it; True if it did now."""
        try:
            note = await self._ledger.checkpoint()
        except LedgerError:
            return False
        size = int(note.split(b"\n", 2)[1])
        witness = self._target.key.name
        async with self._pool.acquire() as conn:
            old = await store.cosigner_size(conn, witness)
        if old >= size:
            return False
        for _ in range(2):  # a 409 tells where the witness stands: one more try from there
            proof = [] if old == 0 else (await self._ledger.consistency_proof(old, size)).proof
            answer = await self._target.send(encode_request(old, proof, note))
            if answer.status != 409:
                break
            known = size_of_conflict(answer.body)
            if known is None or known == old or known > size:
                break
            old = known
        if answer.status != 200:
            metrics.COSIGN_FAILURES.labels(witness=witness, status=str(answer.status)).inc()
            log.warning("witness %s refused our checkpoint %d: %d %s", witness, size, answer.status, answer.body[:200])
            return False
        lines = self._verified(answer.body, checkpoint_text(note))
        if not lines:
            metrics.COSIGN_FAILURES.labels(witness=witness, status="bad-cosignature").inc()
            log.warning("witness %s answered without a valid cosignature of checkpoint %d", witness, size)
            return False
        await self._ledger.add_cosignatures(size, lines)
        async with self._pool.acquire() as conn:
            await store.set_cosigner_size(conn, witness, size)
        self._gauge.set(size)
        return True

    def _verified(self, body: bytes, text: str) -> list[str]:
        """The answer's cosignature lines made by this witness's key over ``text``; others are ignored."""
        good = []
        key = self._target.key
        for line in body.decode("utf-8", "replace").splitlines():
            try:
                signature = parse_signature_line(line)
                if (signature.name, signature.key_id) != (key.name, key.key_id):
                    continue
                verify_cosignature(line, text, key)
            except NoteError:
                continue
            good.append(line + "\n")
        return good


def over_nats(peer: Peer, our_name: str) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """Requests to ``peer``'s witness over its NATS server, and how to close the connection."""
    connection: list[NatsClient] = []

    async def send(body: bytes) -> Answer:
        if not connection or connection[0].is_closed:
            connection[:] = [await links.connect(peer, our_name, "cosigning with")]
        reply = await connection[0].request(names.witness_subject(peer.name), body, timeout=ANSWER_SECONDS)
        status = int((reply.headers or {}).get(STATUS_HEADER, "500"))
        return Answer(status, reply.data)

    async def close() -> None:
        for nc in connection:
            await links.close(nc)

    return send, close


def over_http(url: str, http: httpx.AsyncClient) -> Send:
    """Requests to a C2SP tlog-witness at ``url`` (its submission prefix)."""

    async def send(body: bytes) -> Answer:
        response = await http.post(
            url.rstrip("/") + "/add-checkpoint", content=body, headers={"Content-Type": CONTENT_TYPE}
        )
        return Answer(response.status_code, response.content, response.headers.get("content-type", ""))

    return send
