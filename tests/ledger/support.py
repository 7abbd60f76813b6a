"""Helpers the ledger's HTTP tests share: reading the public log back and checking problem responses."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.ledger.entries import LogEntry, Transfer, entry_decoder
from shared import merkle
from shared.note import Checkpoint, Signer, open_note, parse_checkpoint
from tests.ledger.conftest import auth

Client = AsyncTestClient[Litestar]
T = TypeVar("T")


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and, if given, this problem type slug)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0].strip() == "application/problem+json", response.headers
    body = response.json()
    assert isinstance(body, dict)
    for field in ("type", "title"):
        assert isinstance(body.get(field), str), body
        assert body[field], body
    assert body.get("status") == status, body
    if slug is not None:
        assert body["type"].rsplit("/", 1)[-1] == slug, body
    return body


async def entries(client: httpx.AsyncClient) -> list[bytes]:
    """Every entry of the public log, in order, as the exact stored bytes (checks indexes are gap-free)."""
    out: list[bytes] = []
    while True:
        r = await client.get("/log/entries", params={"start": len(out)})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["start"] == len(out)
        if not page["entries"]:
            return out
        for entry in page["entries"]:
            assert entry["index"] == len(out), "log indexes are not contiguous"
            out.append(base64.b64decode(entry["data"]))


async def log_of(client: httpx.AsyncClient) -> list[LogEntry]:
    return [entry_decoder.decode(data) for data in await entries(client)]


async def relay(
    sender: httpx.AsyncClient, receiver: httpx.AsyncClient, sender_origin: str, receiver_origin: str
) -> list[dict[str, Any]]:
    """The federation, by hand: the receiver decides every transfer in the sender's log that names it; the sender
    reverses what the receiver rejected and records what it accepted. Returns the decisions, as the sender's
    federation reads them back.

    Everything it uses is public (the sender's log, the receiver's decisions) except the two write tokens.
    """
    decisions = []
    for index, entry in enumerate(await log_of(sender)):
        outgoing = isinstance(entry, Transfer) and entry.remote is not None and entry.remote.account is not None
        if not (outgoing and entry.remote.origin == receiver_origin):
            continue
        body = {
            "origin": sender_origin,
            "transfer": entry.id,
            "index": index,
            "payee": entry.remote.account,
            "minutes": entry.minutes,
        }
        if entry.memo_digest is not None:
            body["memo_digest"] = entry.memo_digest
        r = await receiver.post("/crossnet/decisions", json=body, headers=auth("federation"))
        assert r.status_code in (200, 201), r.text
        seen = await receiver.get(f"/crossnet/decisions/{sender_origin}/{entry.id}")
        assert seen.status_code == 200, seen.text
        decision = seen.json()
        assert decision == {**r.json(), "replayed": False}
        answer = {"origin": receiver_origin, "transfer": entry.id, "index": decision["index"]}
        if decision["decision"] == "rejected":
            body = {**answer, "key": f"rejected-{entry.id}"}
            back = await sender.post("/crossnet/reversals", json=body, headers=auth("federation"))
        else:
            back = await sender.post("/crossnet/acceptances", json=answer, headers=auth("federation"))
        assert back.status_code in (200, 201), back.text
        decisions.append(decision)
    return decisions


async def checkpoint(client: Client, signer: Signer) -> Checkpoint:
    """The latest checkpoint, with its signature verified under the log's key."""
    r = await client.get("/log/checkpoint")
    assert r.status_code == 200, r.text
    note = open_note(r.content, [signer.verifier()])
    return parse_checkpoint(note.text)


async def log_state(client: Client) -> tuple[int, bytes | None, list[bytes]]:
    """(checkpoint size, checkpoint bytes, entries): what must not change when a request is refused."""
    r = await client.get("/log/checkpoint")
    note = r.content if r.status_code == 200 else None
    found = await entries(client)
    size = int(note.split(b"\n")[1]) if note else 0
    return size, note, found


def leaf_hashes(data: Iterable[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(d) for d in data]


async def gather_in_chunks(calls: list[Callable[[], Awaitable[T]]], chunk: int = 100) -> list[T]:
    """Run the calls ``chunk`` at a time concurrently; results in call order."""
    out: list[T] = []
    for i in range(0, len(calls), chunk):
        out.extend(await asyncio.gather(*(call() for call in calls[i : i + chunk])))
    return out
