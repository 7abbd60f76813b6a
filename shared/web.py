"""HTTP helpers both services' controllers share."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

T = TypeVar("T")
AnyRequest = Request[Any, Any, Any]


async def strict_body(request: AnyRequest, type_: type[T]) -> T:
    """Decode the body strictly: Litestar's own conversion is lenient (it would take "5" for 5)."""
    try:
        return msgspec.json.decode(await request.body(), type=type_)
    except msgspec.ValidationError as exc:
        raise ValidationException(f"Validation failed: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationException(f"Malformed JSON body: {exc}") from None
