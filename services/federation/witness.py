"""Our witness: cosigns a log's checkpoint once it has verified it is consistent with the last one it cosigned.

It witnesses the logs it knows (our neighbours', by their log keys). Its record per log is the latest checkpoint
it cosigned, moved only forward by a compare-and-swap in PostgreSQL, so no interleaving of requests can roll it
back. Two signed checkpoints that cannot both be true (one size, two roots) are kept as evidence; while that
evidence is open, the witness cosigns nothing more for that log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import asyncpg

from services.federation import metrics, store
from services.federation.witness_protocol import AddCheckpoint, Answer, Refused, checkpoint_text, parse_request
from shared.logverify import LogVerifyError, verify_consistency
from shared.note import (
    CosignatureSigner,
    NoteError,
    Signature,
    UnverifiedNoteError,
    Verifier,
    open_note,
    parse_checkpoint,
)

log = logging.getLogger(__name__)


class Witness:
    """Answers add-checkpoint requests for the logs whose keys it is given (origin -> log verifier key)."""

    def __init__(self, pool: asyncpg.Pool, signer: CosignatureSigner, logs: Mapping[str, Verifier]) -> None:
        self._pool = pool
        self._signer = signer
        self._logs = logs

    async def add_checkpoint(self, body: bytes) -> Answer:
        """Answer one request, as C2SP tlog-witness says (never raises for a bad request)."""
        try:
            request = parse_request(body)
            line = await self._cosign(request)
        except Refused as refused:
            metrics.WITNESS_ANSWERS.labels(status=str(refused.answer.status)).inc()
            return refused.answer
        metrics.WITNESS_ANSWERS.labels(status="200").inc()
        return Answer(200, line.encode())

    async def _cosign(self, request: AddCheckpoint) -> str:
        text = checkpoint_text(request.note)
        try:
            checkpoint = parse_checkpoint(text)
        except NoteError as exc:
            raise Refused(400, f"not a checkpoint: {exc}") from None
        key = self._logs.get(checkpoint.origin)
        if key is None:
            raise Refused(404, f"this witness does not know the log {checkpoint.origin!r}")
        try:
            open_note(request.note, [key])
        except (UnverifiedNoteError, NoteError):
            raise Refused(403, f"the checkpoint is not signed by {checkpoint.origin}'s key") from None
        if request.old > checkpoint.size:
            raise Refused(400, f"old size {request.old} is beyond the checkpoint's size {checkpoint.size}")
        async with self._pool.acquire() as conn:
            if await store.has_open_evidence(conn, checkpoint.origin):
                raise Refused(403, f"cosigning for {checkpoint.origin} is stopped: it showed two checkpoints")
            last = await store.witnessed(conn, checkpoint.origin)
            size = 0 if last is None else last.size
            if request.old != size:
                raise Refused(409, f"this witness last cosigned size {size}", size=size)
            if last is not None and checkpoint.size == last.size and checkpoint.root_hash != last.root:
                await store.add_evidence(
                    conn, checkpoint.origin, "fork", last.note, request.note, f"two roots for size {size}"
                )
                metrics.ALERTS.labels(peer=checkpoint.origin, kind="fork").inc()
                log.error("FORK: %s signed two checkpoints of size %d with different roots", checkpoint.origin, size)
                raise Refused(409, f"a checkpoint of size {size} with another root was cosigned", size=size)
            if last is None and request.proof:
                raise Refused(422, "a consistency proof from size 0 must be empty")
            if last is not None and checkpoint.size > last.size:
                try:
                    verify_consistency(last.size, last.root, checkpoint.size, checkpoint.root_hash, request.proof)
                except LogVerifyError as exc:
                    raise Refused(422, f"the consistency proof does not verify: {exc}") from None
            moved = await store.witness_advance(
                conn, checkpoint.origin, size, checkpoint.size, checkpoint.root_hash, request.note
            )
            if not moved:
                now = await store.witnessed(conn, checkpoint.origin)
                current = 0 if now is None else now.size
                raise Refused(409, f"this witness last cosigned size {current}", size=current)
        timestamp = int(time.time())
        signature = self._signer.sign(text, timestamp)
        return Signature(self._signer.name, self._signer.key_id, signature).to_line()
