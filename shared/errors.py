"""Domain errors: the refusals domain code raises, free of any web framework.

Each carries the HTTP status, problem slug and title it maps to; ``shared.problems`` turns them into RFC 9457
responses.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An expected refusal: a caller asked for something the domain does not allow."""

    status = 400
    slug = "invalid"
    title = "Invalid request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Invalid(DomainError):
    status, slug, title = 422, "invalid", "Invalid request"


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict"


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Forbidden"


class InsufficientHours(DomainError):
    status, slug, title = 409, "insufficient-hours", "Limit would be crossed"


class AccountClosed(DomainError):
    status, slug, title = 409, "account-closed", "Account closed"


class Unavailable(DomainError):
    """A service this one relies on did not answer (or not usably): nothing was done; try again later."""

    status, slug, title = 503, "unavailable", "Service unavailable"


class TooManyRequests(DomainError):
    """Slow down: the response carries ``Retry-After`` (seconds)."""

    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after
