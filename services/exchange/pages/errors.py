"""How the pages answer a refusal: a signed-out visitor is sent to sign in (and back afterwards); any other
problem is a page of its own, not a JSON problem.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from services.exchange import forms
from services.exchange.forms import HEADERS, SignInNeeded
from shared.errors import DomainError
from shared.web import AnyRequest


def to_sign_in(request: AnyRequest, exc: SignInNeeded) -> Redirect:
    """To the sign-in page, which returns to the page asked for (after a form's post, to /me)."""
    base = str(request.scope.get("root_path", "")).rstrip("/")
    target = request.url.path[len(base) :] if request.method in forms.SAFE_METHODS else "/me"
    return Redirect(f"{base}/login?" + urlencode({"next": target}), status_code=303)


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A refusal or a broken request as a page of its own (not a JSON problem)."""
    if isinstance(exc, DomainError):
        status, detail = exc.status, exc.detail
    elif isinstance(exc, HTTPException) and exc.status_code < 500:
        status, detail = exc.status_code, exc.detail
    else:
        request.logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
        status, detail = HTTP_500_INTERNAL_SERVER_ERROR, "Something went wrong on our side. Please try again."
    return Template(
        template_name="error.html",
        context={
            "me": None,
            "my_name": "",
            "csrf": "",
            "base": str(request.scope.get("root_path", "")).rstrip("/"),
            "origin": request.app.state.origin,
            "notice": None,
            "error": None,
            "status": status,
            "detail": detail,
        },
        status_code=status,
        headers=HEADERS,
    )
