"""The exchange's HTTP client for the ledger API, authenticated with the exchange's service token.

Every call either returns the ledger's answer as a Struct, or raises one of two errors that tell the caller what
to do next: ``LedgerRefused`` (the ledger looked at the request and said no; sending it again will not help) or
``LedgerUnavailable`` (no answer, a timeout or a server error; send it again later with the same key, which the
ledger deduplicates).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

AccountKind = Literal["member", "community"]

# Statuses that mean "not now" rather than "no": request timeout and rate limiting.
_RETRYABLE_4XX = frozenset({408, 429})
_T = TypeVar("_T")


class LedgerError(Exception):
    """Base of the errors a ledger call raises."""


class LedgerRefused(LedgerError):
    """The ledger answered with a 4xx problem document: resending the same request will be refused again.

    ``problem`` is the RFC 9457 body as the ledger sent it (``type``, ``title``, ``status``, ``detail``,
    ``extra``...). A 409 covers both a domain refusal (``insufficient-hours``, ``account-closed``) and an
    idempotency conflict (the key was already used for a different request): both are permanent.
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"ledger refused ({status} {self.slug}): {problem.get('detail') or problem.get('title')}")

    @property
    def slug(self) -> str:
        """The last segment of the problem type, e.g. ``insufficient-hours``, ``conflict``, ``not-found``."""
        kind = self.problem.get("type")
        return kind.rsplit("/", 1)[-1] if isinstance(kind, str) and kind else f"http-{self.status}"


class LedgerUnavailable(LedgerError):
    """No usable answer (connection error, timeout, 5xx, 408/429, an unreadable body): try again later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


# ---- What the ledger answers (tolerant: a newer ledger may add fields) ----


class OpenedAccount(msgspec.Struct, frozen=True, kw_only=True, tag="exchange.ledger.opened-account.v1"):
    """An account the ledger opened for a key (``replayed``: it had been opened before with that key).

    ``floor`` and ``ceiling`` are the account's limits when this answer was made.
    """

    account: str
    kind: str
    floor: int
    ceiling: int | None
    # Log index of the account's opening entry.
    index: int
    # Lets the member read their own balance and statement directly from the ledger.
    owner_token: str
    replayed: bool


class PostedTransfer(msgspec.Struct, frozen=True, kw_only=True, tag="exchange.ledger.posted-transfer.v1"):
    """A transfer in the ledger's log (``replayed``: the key had already posted it; this is the original)."""

    id: str
    index: int
    payer: str
    payee: str
    minutes: int
    memo_digest: str | None = None
    exchange_ref: str | None = None
    reverses: str | None = None
    at: datetime
    replayed: bool


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    floor: int
    ceiling: int | None
    balance: int
    closed: bool
    peer: str | None = None
    opened_index: int
    # The log size the balance is taken at.
    as_of_size: int | None = None


class StatementLine(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    transfer: str
    counterparty: str
    delta: int
    balance: int
    reverses: str | None = None
    memo_digest: str | None = None
    exchange_ref: str | None = None
    at: datetime


class StatementPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a statement, newest line first; pass ``next_before`` as ``before`` for the next page."""

    account: str
    lines: list[StatementLine]
    next_before: int | None = None


class LedgerStatus(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    log_size: int


class _AccountBody(msgspec.Struct, kw_only=True):
    """The ledger's answer to opening an account (its AccountView, with the owner token)."""

    id: str
    kind: str
    floor: int
    ceiling: int | None
    opened_index: int
    owner_token: str


# ---- Request bodies (None fields are left out, so an older ledger still understands them) ----


class _OpenAccountBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    kind: str = "member"
    floor: int | None = None
    ceiling: int | None = None


class _TransferBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    payer: str
    payee: str
    minutes: int
    memo_digest: str | None = None
    exchange_ref: str | None = None


_encoder = msgspec.json.Encoder()
_account_body = msgspec.json.Decoder(_AccountBody)
_posted_transfer = msgspec.json.Decoder(PostedTransfer)
_account_view = msgspec.json.Decoder(AccountView)
_statement_page = msgspec.json.Decoder(StatementPage)
_ledger_status = msgspec.json.Decoder(LedgerStatus)
_problem = msgspec.json.Decoder(dict[str, Any])


class LedgerClient:
    """Async client for one ledger. Owns one aiohttp session: ``start()``/``close()``, or ``async with``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return self._base

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- Commands (idempotent by key) ----

    async def open_account(
        self, key: str, kind: AccountKind = "member", floor: int | None = None, ceiling: int | None = None
    ) -> OpenedAccount:
        """Open an account for ``key``; the same key (with the same request) answers with the same account.

        ``floor=None`` takes the ledger's default (the network's member floor, or 0 for the community pot).
        """
        body = _OpenAccountBody(key=key, kind=kind, floor=floor, ceiling=ceiling)
        status, data = await self._request("POST", "/accounts", body=body)
        opened = self._decode(_account_body, data)
        return OpenedAccount(
            account=opened.id,
            kind=opened.kind,
            floor=opened.floor,
            ceiling=opened.ceiling,
            index=opened.opened_index,
            owner_token=opened.owner_token,
            replayed=status == 200,
        )

    async def transfer(
        self,
        key: str,
        payer: str,
        payee: str,
        minutes: int,
        memo_digest: str | None = None,
        exchange_ref: str | None = None,
    ) -> PostedTransfer:
        """Post ``minutes`` from ``payer`` to ``payee`` once per key; a repeat answers with the original transfer."""
        body = _TransferBody(
            key=key, payer=payer, payee=payee, minutes=minutes, memo_digest=memo_digest, exchange_ref=exchange_ref
        )
        _, data = await self._request("POST", "/transfers", body=body)
        return self._decode(_posted_transfer, data)

    # ---- Reads ----

    async def account(self, account_id: str, at_size: int | None = None) -> AccountView:
        """The account's limits and balance (after the first ``at_size`` log entries, if given)."""
        params = {} if at_size is None else {"at_size": str(at_size)}
        _, data = await self._request("GET", f"/accounts/{quote(account_id, safe='')}", params=params)
        return self._decode(_account_view, data)

    async def statement(self, account_id: str, *, before: int | None = None, limit: int = 50) -> StatementPage:
        """One page (newest first) of the account's postings with a log index below ``before``."""
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        _, data = await self._request("GET", f"/accounts/{quote(account_id, safe='')}/statement", params=params)
        return self._decode(_statement_page, data)

    async def statement_lines(self, account_id: str, *, page_size: int = 200) -> AsyncIterator[StatementLine]:
        """Every line of the account's statement, newest first, reading page after page."""
        before: int | None = None
        while True:
            page = await self.statement(account_id, before=before, limit=page_size)
            for line in page.lines:
                yield line
            if page.next_before is None:
                return
            before = page.next_before

    async def ready(self) -> LedgerStatus:
        """The ledger's readiness (it can reach its database) and its log size."""
        _, data = await self._request("GET", "/ready")
        return self._decode(_ledger_status, data)

    # ---- Plumbing ----

    async def _request(
        self, method: str, path: str, *, body: msgspec.Struct | None = None, params: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self._session is None:
            raise RuntimeError("the ledger client is not started (call start() or use it as a context manager)")
        url = self._base + path
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=None if body is None else _encoder.encode(body),
                headers=None if body is None else {"Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                status = response.status
                data = await response.read()
                content_type = response.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            # A timeout may hide a request the ledger did commit: resending with the same key is what finds out.
            raise LedgerUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        if 200 <= status < 300:
            return status, data
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            raise LedgerRefused(status, _problem_of(status, content_type, data))
        raise LedgerUnavailable(f"{method} {url}: HTTP {status}: {data[:200].decode(errors='replace')}", status)

    @staticmethod
    def _decode(decoder: msgspec.json.Decoder[_T], data: bytes) -> _T:
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            # Not an answer this client understands (a proxy's page, a mismatched version): not the request's fault.
            raise LedgerUnavailable(f"unexpected answer from the ledger: {exc}") from exc


def _problem_of(status: int, content_type: str, data: bytes) -> dict[str, Any]:
    """The problem document of a refusal, or one made up from the body if the answer was not one."""
    if content_type in ("application/problem+json", "application/json"):
        try:
            problem = _problem.decode(data)
        except msgspec.DecodeError:
            pass
        else:
            problem.setdefault("status", status)
            return problem
    return {
        "type": "about:blank",
        "title": f"HTTP {status}",
        "status": status,
        "detail": data[:500].decode(errors="replace"),
    }
