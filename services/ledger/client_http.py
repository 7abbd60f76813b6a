"""The HTTP plumbing of the ledger's client (``services.ledger.client``): one httpx client, a bounded call, and the
two errors every call raises instead of an answer.

``LedgerRefused``: the ledger looked at the request and said no; sending it again will not help.
``LedgerUnavailable``: no answer, a timeout or a server error; send it again later with the same key, which the
ledger deduplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import msgspec

# Statuses that mean "not now" rather than "no": request timeout and rate limiting.
_RETRYABLE_4XX = frozenset({408, 429})
_T = TypeVar("_T")
_encoder = msgspec.json.Encoder()
_problem = msgspec.json.Decoder(dict[str, Any])


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

    @property
    def final(self) -> bool:
        """Whether the ledger refused the command itself, not the way it was reached.

        A wrong token (401, 403) or a wrong address (a 404 or 405 that is not the ledger's own "not-found" about an
        account or transfer) is an operator's mistake: once fixed, the command goes through, so a sender retries it
        like an unavailable ledger rather than recording it as the command's outcome.
        """
        if self.status in (401, 403):
            return False
        return not (self.status in (404, 405) and self.slug != "not-found")


class LedgerUnavailable(LedgerError):
    """No usable answer (connection error, timeout, 5xx, 408/429, an unreadable body): try again later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class LedgerHttp:
    """Calls to one ledger's HTTP API over one ``httpx.AsyncClient``: ``start()``/``close()``, or ``async with``.

    ``timeout`` bounds a whole call (connecting, sending, waiting and reading), as the outbox's retries expect.
    ``transport`` lets a caller put the client on another transport (an in-process app, say).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = timeout
        self._max_connections = max_connections
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return self._base

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(
                headers=self._headers,
                timeout=httpx.Timeout(self._timeout),
                limits=httpx.Limits(
                    max_connections=self._max_connections, max_keepalive_connections=self._max_connections
                ),
                follow_redirects=False,
                # The ledger's address is configured; proxies from the environment are not put in between.
                trust_env=False,
                transport=self._transport,
            )

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _request(
        self, method: str, path: str, *, body: msgspec.Struct | None = None, params: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self._http is None:
            raise RuntimeError("the ledger client is not started (call start() or use it as a context manager)")
        url = self._base + path
        try:
            # httpx bounds each phase; the whole call is bounded here, as callers count on.
            async with asyncio.timeout(self._timeout):
                if self._transport is not None:
                    response = await self._direct(method, url, body, params)
                else:
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        content=None if body is None else _encoder.encode(body),
                        headers=None if body is None else {"Content-Type": "application/json"},
                    )
        except (httpx.HTTPError, TimeoutError) as exc:
            # A timeout may hide a request the ledger did commit: resending with the same key is what finds out.
            raise LedgerUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        status, data = response.status_code, response.content
        if 200 <= status < 300:
            return status, data
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            content_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
            raise LedgerRefused(status, _problem_of(status, content_type, data))
        raise LedgerUnavailable(f"{method} {url}: HTTP {status}: {data[:200].decode(errors='replace')}", status)

    async def _direct(
        self, method: str, url: str, body: msgspec.Struct | None, params: Mapping[str, str] | None
    ) -> httpx.Response:
        """The request straight to the given transport (an in-process app): the same HTTP request, without the
        client's redirect, cookie and auth layers, which cost more than the ledger's own work per call."""
        assert self._transport is not None
        headers = self._headers if body is None else {**self._headers, "Content-Type": "application/json"}
        request = httpx.Request(
            method, url, params=params, headers=headers, content=None if body is None else _encoder.encode(body)
        )
        response = await self._transport.handle_async_request(request)
        await response.aread()
        return response

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
