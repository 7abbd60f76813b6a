"""Hostile request bodies for every JSON endpoint of an app: what the services' input-hardening tests send."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from litestar import Litestar
from litestar.enums import RequestEncodingType
from litestar.routes import HTTPRoute

# About 4 KB of brackets: deeper than any decoder's recursion limit, small enough for any body size limit.
DEPTH = 1000
DEEP = "[" * DEPTH + "]" * DEPTH


def json_endpoints(app: Litestar) -> Iterator[tuple[str, str, type | None]]:
    """(method, path, body type) of every handler that takes a JSON body, path parameters filled with a
    well-formed but unknown value."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            field = handler.parsed_data_field
            if field is None or getattr(field.kwarg_definition, "media_type", None) != RequestEncodingType.JSON:
                continue
            values = {name: "1" if p.type is int else "x" for name, p in route.path_parameters.items()}
            path = route.path_format.format(**values)
            annotation = field.annotation if isinstance(field.annotation, type) else None
            for method in sorted(handler.http_methods):
                yield method, path, annotation


def deep_bodies(body_type: type | None) -> Iterator[str]:
    """Deeply nested JSON: bare, under an unknown field, and under each field the body type declares."""
    yield DEEP
    yield '{"unknown_field": ' + DEEP + "}"
    if body_type is not None and issubclass(body_type, msgspec.Struct):
        for name in body_type.__struct_encode_fields__:
            yield '{"' + name + '": ' + DEEP + "}"
