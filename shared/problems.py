"""The single mapping of errors to RFC 9457 problem details responses, for both services' apps."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from shared.db import database_lost
from shared.errors import DomainError, TooManyRequests, Unavailable
from shared.web import requested_path

PROBLEM_TYPE_BASE = "https://timebank.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details body."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    extra: dict[str, Any] | None = None


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[Problem]:
    return Response(problem, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_of(exc: DomainError, instance: str | None = None) -> Problem:
    """The problem a domain error is answered with (alone, or as one item's outcome of a batch)."""
    return Problem(
        type=PROBLEM_TYPE_BASE + exc.slug,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        instance=instance,
        extra=exc.extra or None,
    )


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Problem]:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return problem_response(problem_of(exc, requested_path(request)), headers)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    errors = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [e if isinstance(e, dict) else {"message": str(e)} for e in exc.extra]
    status = exc.status_code
    slug = "server-error" if status >= 500 else "http-" + str(status)
    return problem_response(
        Problem(
            type=PROBLEM_TYPE_BASE + slug,
            title=exc.detail if status < 500 else "Internal server error",
            status=status,
            detail=exc.detail if status < 500 else None,
            instance=requested_path(request),
            errors=errors,
        ),
        # Such as a 405's Allow, which names the methods the resource answers.
        dict(exc.headers) if exc.headers else None,
    )


def undecodable_body_handler(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Problem]:
    """A JSON body that is not UTF-8: Litestar's body decoding lets the UnicodeDecodeError out (a 500 otherwise)."""
    return problem_response(
        Problem(
            type=PROBLEM_TYPE_BASE + "http-400",
            title="Malformed JSON body",
            status=400,
            detail=f"the request body is not valid UTF-8 (byte {exc.start})",
            instance=requested_path(request),
        )
    )


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if database_lost(exc):
        # Not a bug here: the database is gone for now (stopped, restarting). Say so, and that it is worth retrying.
        request.logger.warning("the database cannot be reached (%s: %s)", type(exc).__name__, exc)
        lost = Unavailable("the database cannot be reached right now; try again later")
        return problem_response(problem_of(lost, requested_path(request)), {"Retry-After": "5"})
    request.logger.exception("unhandled error on %s", requested_path(request), exc_info=exc)
    return problem_response(
        Problem(
            type=PROBLEM_TYPE_BASE + "server-error",
            title="Internal server error",
            status=HTTP_500_INTERNAL_SERVER_ERROR,
            instance=requested_path(request),
        )
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: domain_error_handler,
    HTTPException: http_error_handler,
    UnicodeDecodeError: undecodable_body_handler,
    Exception: unexpected_error_handler,
}
