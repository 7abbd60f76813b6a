"""The exchange's command side: each command reads streams and read models, decides, seals, and then appends,
projects and enqueues what the ledger must be told in one atomic statement (see ``unit.py``), all or nothing.

Optimistic concurrency: two commands on one stream race to the next version; the loser retries from a fresh
read, so a decision is always made on the latest state. One module per aggregate; ``Commands`` is all of them.

``reads.py`` is the read side the web pages need beyond the JSON API's reads (names beside ids, and the like).
"""

from __future__ import annotations

from services.exchange.service.core import account_key, new_id
from services.exchange.service.exchanges import ExchangeCommands
from services.exchange.service.listings import ListingCommands
from services.exchange.service.members import MemberCommands
from services.exchange.service.outcomes import OutcomeCommands
from services.exchange.service.payments import PaymentCommands

__all__ = ["Commands", "account_key", "new_id"]


class Commands(MemberCommands, ListingCommands, ExchangeCommands, PaymentCommands, OutcomeCommands):
    """Every state change the exchange makes. Callers pass the acting member (or, to exchanges, the credentials
    they came with, looked up in the same round trip as the exchange); errors are DomainErrors."""
