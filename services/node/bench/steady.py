"""A ring of networks and its steady state, read from the outside: the public log and balances, and the federation's
status (an auditor's token).

Steady means, at one moment (no log grew while it was read):

- every network's copy of each neighbour's log is at that neighbour's current size;
- every network's latest checkpoint is of its whole log, signed by its key and cosigned by both neighbours' witnesses;
- no cross-network payment is in flight, either way (each was decided, and each rejected one reversed);
- for every link A-B, ``balance_A(peer:B) + balance_B(peer:A) == 0``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.node.bench.networks import TOKENS, Network
from shared.logverify import LogVerifyError, check_cosignatures, verify_checkpoint

AUDITOR = {"Authorization": f"Bearer {TOKENS['auditor']}"}
POLL_SECONDS = 0.5  # the status costs each node some work: read it twice a second


class RingFailed(RuntimeError):
    """The ring broke (a node exited, a checkpoint or cosignature is bad, a fork was seen) or never became steady."""


@dataclass
class Ring:
    """The networks in ring order, a client for each node, and (once linked) each one's clearing accounts."""

    nets: list[Network]
    clients: list[httpx.AsyncClient]
    # Per network: its neighbours' origins -> their clearing accounts in its ledger.
    clearing: list[dict[str, str]] = field(default_factory=list)

    def left(self, i: int) -> int:
        return (i - 1) % len(self.nets)

    def right(self, i: int) -> int:
        return (i + 1) % len(self.nets)

    def neighbours(self, i: int) -> tuple[int, int]:
        return self.left(i), self.right(i)


async def _status(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.get("/federation/status", headers=AUDITOR)
    r.raise_for_status()
    return dict(r.json())


async def linked(ring: Ring, within: float) -> None:
    """Wait until every network has linked both neighbours (a clearing account for each), and note the accounts."""
    deadline = time.monotonic() + within
    while True:
        found = []
        for http in ring.clients:
            peers = (await _status(http))["peers"]
            found.append({p["origin"]: p["clearing_account"] for p in peers if p["clearing_account"]})
        if all(len(accounts) == 2 for accounts in found):
            ring.clearing = found
            return
        if time.monotonic() > deadline:
            waiting = [net.name for net, accounts in zip(ring.nets, found, strict=True) if len(accounts) < 2]
            raise RingFailed(f"not every link came up; waiting on {', '.join(waiting)}")
        await asyncio.sleep(POLL_SECONDS)


async def _sizes(ring: Ring) -> list[int]:
    return [int((await http.get("/ledger/ready")).json()["log_size"]) for http in ring.clients]


async def _balances(http: httpx.AsyncClient) -> dict[str, int]:
    r = await http.get("/ledger/log/balances")
    r.raise_for_status()
    return {a["id"]: int(a["balance"]) for a in r.json()["accounts"]}


async def pending(ring: Ring) -> tuple[list[str], list[int]]:
    """What keeps the ring from its steady state now (nothing: steady), and each log's size."""
    nets = ring.nets
    sizes = await _sizes(ring)
    waiting: list[str] = []
    balances = []
    for i, (net, http) in enumerate(zip(nets, ring.clients, strict=True)):
        note = (await http.get("/ledger/log/checkpoint")).content
        try:
            checkpoint = verify_checkpoint(note, net.signer.verifier())
        except LogVerifyError as exc:
            raise RingFailed(f"{net.name}'s checkpoint does not verify: {exc}") from None
        if checkpoint.size != sizes[i]:
            waiting.append(f"{net.name}'s checkpoint is of {checkpoint.size} of its {sizes[i]} entries")
        verdict = check_cosignatures(note, [nets[j].witness.verifier() for j in ring.neighbours(i)])
        if verdict.bad:
            raise RingFailed(f"{net.name}'s checkpoint carries a bad cosignature: {verdict.bad}")
        if verdict.missing:
            waiting.append(f"{net.name}'s checkpoint awaits the cosignature of {', '.join(verdict.missing)}")
        status = await _status(http)
        if status["alerts"]:
            raise RingFailed(f"{net.name} raised an alert: {status['alerts'][0]['detail']}")
        peers = {p["origin"]: p for p in status["peers"]}
        for j in ring.neighbours(i):
            peer = peers[nets[j].origin]
            if peer["replicated_size"] != sizes[j]:
                waiting.append(f"{net.name}'s copy of {nets[j].name}'s log holds {peer['replicated_size']} of "
                               f"{sizes[j]} entries")  # fmt: skip
            for way, towards in (("in_flight_out", "to"), ("in_flight_in", "from")):
                if peer[way]["payments"]:
                    waiting.append(f"{net.name}: {peer[way]['payments']} payments {towards} {nets[j].name} in flight")
        balances.append(await _balances(http))
    for i in range(len(nets)):
        j = ring.right(i)
        a, b = nets[i], nets[j]
        total = balances[i][ring.clearing[i][b.origin]] + balances[j][ring.clearing[j][a.origin]]
        if total:
            waiting.append(f"balance_{a.name}(peer:{b.name}) + balance_{b.name}(peer:{a.name}) = {total}")
    if await _sizes(ring) != sizes:
        waiting.append("a log grew while the ring was read")
    return waiting, sizes


async def steady(ring: Ring, within: float) -> str:
    """Wait until the ring is steady; say what was found. Fail, naming what it still waits on, after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        waiting, sizes = await pending(ring)
        if not waiting:
            break
        if time.monotonic() > deadline:
            shown = "\n  ".join(waiting[:12]) + (f"\n  ... and {len(waiting) - 12} more" if len(waiting) > 12 else "")
            raise RingFailed(f"no steady state after {within:.0f} s; still waiting on:\n  {shown}")
        await asyncio.sleep(POLL_SECONDS)
    refused = 0
    for http in ring.clients:
        refused += sum(r["count"] for p in (await _status(http))["peers"] for r in p["rejected"])
    span = f"{min(sizes):,}" if min(sizes) == max(sizes) else f"{min(sizes):,} to {max(sizes):,}"
    return (
        f"logs of {span} entries, each copied whole by both neighbours and its checkpoint "
        f"cosigned by both; nothing in flight; every link's clearing balances sum to 0; {refused} messages refused"
    )
