"""Who may do what on the ledger.

Writes need a coordinator or service credential (configured bearer tokens, stored as SHA-256). The log, proofs
and checkpoints are public. An account's balance and statement are readable by coordinators, auditors and
services, and by the account's owner with the owner token the ledger returned when the account was opened
(an HMAC of the account id, so it can be handed out again on a replayed open and needs no storage).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from services.ledger.entries import ACCOUNT_ID_PATTERN
from shared.bearer import TokenBook
from shared.errors import Forbidden, Unauthorized
from shared.settings import ApiToken

OWNER_PREFIX = "own_"
_ACCOUNT_RE = re.compile(ACCOUNT_ID_PATTERN)
ACCOUNT_ID_LENGTH = len("acct_") + 20


@dataclass(frozen=True, slots=True)
class Caller:
    role: str  # "anonymous", "owner", "service", "coordinator" or "auditor"
    name: str
    account: str | None = None


ANONYMOUS = Caller("anonymous", "anonymous")


class Access:
    def __init__(self, tokens: list[ApiToken], owner_secret: bytes) -> None:
        self._tokens = TokenBook(tokens)
        self._owner_secret = owner_secret

    def owner_token(self, account: str) -> str:
        """``own_<account id>_<hex HMAC>``; account ids have a fixed length, so the token splits unambiguously."""
        mac = hmac.new(self._owner_secret, account.encode(), hashlib.sha256).hexdigest()[:48]
        return f"{OWNER_PREFIX}{account}_{mac}"

    def caller(self, authorization: str | None) -> Caller:
        token = self._tokens.bearer(authorization)
        if token is None:
            return ANONYMOUS
        if token.startswith(OWNER_PREFIX):
            account = token[len(OWNER_PREFIX) : len(OWNER_PREFIX) + ACCOUNT_ID_LENGTH]
            if _ACCOUNT_RE.match(account) and hmac.compare_digest(self.owner_token(account), token):
                return Caller("owner", account, account)
            raise Unauthorized("unknown or invalid token")
        known = self._tokens.lookup(token)
        if known is None:
            raise Unauthorized("unknown or invalid token")
        return Caller(known.role, known.name)


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    access: Access = connection.app.state.access
    return access.caller(connection.headers.get("authorization"))


async def require_writer(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: ledger writes are for coordinators and services (async: Litestar runs a sync guard in a thread)."""
    caller = caller_of(connection)
    if caller.role == "anonymous":
        raise Unauthorized("writing to the ledger needs a coordinator or service token")
    if caller.role not in ("coordinator", "service", "federation"):
        raise Forbidden("writing to the ledger needs a coordinator or service token")


async def require_federation(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: only the federation records decisions on neighbours' transfers, and only for entries it verified in
    the neighbour's log; no coordinator or service may decide a transfer nobody verified."""
    caller = caller_of(connection)
    if caller.role == "anonymous":
        raise Unauthorized("deciding a neighbour's transfer needs the federation's token")
    if caller.role != "federation":
        raise Forbidden("only the federation decides neighbours' transfers (after verifying them in their log)")


async def require_reader_of(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: an account's balance is for its owner, coordinators, auditors and services."""
    caller = caller_of(connection)
    if caller.role == "anonymous":
        raise Unauthorized("reading an account needs its owner token or a coordinator or auditor token")
    if caller.role == "owner" and caller.account != connection.path_params.get("account_id"):
        raise Forbidden("an owner token reads only its own account")
