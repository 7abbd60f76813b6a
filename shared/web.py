"""HTTP helpers both services' controllers share."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

AnyRequest = Request[Any, Any, Any]


def requested_path(request: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The path the client asked for, mount point included (the node serves the ledger under /ledger).

    Per ASGI a path holds the mount's root_path; Litestar, once it has routed a request, keeps only the part after
    it, and its ``url`` always adds root_path: before routing (404, 405) that path would name the mount twice.
    """
    path: str = request.scope["path"]
    if "route_handler" in request.scope:
        return request.scope.get("root_path", "") + path
    return path


def is_json(media_type: str) -> bool:
    """Whether a Content-Type (its media type, lower case, without parameters) labels JSON."""
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class StrictRequest(Request[Any, Any, Any]):
    """A request whose JSON body is decoded once, strictly, by the type its handler declares for ``data``.

    Litestar's own conversion is lenient (it would take "5" for 5), so the schema a handler documents would not be
    the parser; decoded here, the value is already of the declared type and Litestar passes it through unchanged.
    A body nested deeper than the decoder recurses is refused as malformed (400), as any other bad body is; a body
    not labelled as JSON is refused (415) before it is read as JSON.
    """

    async def json(self) -> Any:
        media_type = self.content_type[0]
        if await self.body() and not is_json(media_type):
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"the body must be JSON (Content-Type: application/json), not {media_type or 'unlabelled'}",
            )
        try:
            return await self._decoded()
        except RecursionError:
            # msgspec decodes nested values (even ones it skips, such as an unknown field's) by recursion, bounded by
            # Python's recursion limit: a few kilobytes of brackets reach it.
            raise ValidationException("Malformed JSON body: nested too deeply") from None

    async def _decoded(self) -> Any:
        field = self.route_handler.parsed_data_field
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, msgspec.Struct):
            return await super().json()
        try:
            return msgspec.json.decode(await self.body(), type=field.annotation)
        except msgspec.ValidationError as exc:
            # Shaped like Litestar's own validation errors, which the problem details list under "errors".
            problem = [{"message": str(exc), "key": "data", "source": "body"}]
            raise ValidationException(
                f"Validation failed for {self.method} {requested_path(self)}", extra=problem
            ) from None
        except msgspec.DecodeError as exc:
            raise ValidationException(f"Malformed JSON body: {exc}") from None
