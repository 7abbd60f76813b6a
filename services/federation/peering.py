"""Linking a neighbour in our ledger: its clearing account, whose floor is minus the trust limit we agreed."""

from __future__ import annotations

import asyncio
import logging

from services.federation.peers import Peer
from services.ledger.client import LedgerClient, LedgerError

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


def clearing_key(origin: str) -> str:
    """The key our ledger knows a neighbour's clearing account by (the same key opens it once)."""
    return f"federation peer {origin}"


async def link(ledger: LedgerClient, peer: Peer) -> str:
    """Open the neighbour's clearing account if it has none, set its floor to minus the trust limit, and return
    its id. Retries while the ledger is unreachable."""
    while True:
        try:
            opened = await ledger.open_account(clearing_key(peer.origin), "peer", floor=0, peer=peer.origin)
            if opened.floor != -peer.trust_limit:
                await ledger.change_limits(opened.account, -peer.trust_limit)
            return opened.account
        except LedgerError as exc:
            log.warning("cannot link %s in the ledger yet (%s); retrying", peer.origin, exc)
            await asyncio.sleep(RETRY_SECONDS)
