"""Hostile request bodies on the exchange's API: answered with problems, never a server error or a traceback."""

from __future__ import annotations

import logging

import pytest

from tests.exchange.support import Exchange
from tests.hostile import deep_bodies, json_endpoints
from tests.ledger.support import assert_problem


async def test_deeply_nested_json_is_a_400_problem_without_a_traceback(
    exchange: Exchange, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints = list(json_endpoints(exchange.app))
    assert len(endpoints) >= 10, endpoints
    json = {"Content-Type": "application/json"}
    with caplog.at_level(logging.INFO):
        for method, path, body_type in endpoints:
            for body in deep_bodies(body_type):
                # No sign-in: the body is read before the caller is known.
                r = await exchange.client.request(method, path, content=body, headers=json)
                assert_problem(r, 400)
    tracebacks = [rec.getMessage() for rec in caplog.records if rec.exc_info]
    assert not tracebacks, tracebacks


async def test_a_method_not_allowed_names_the_allowed_ones(exchange: Exchange) -> None:
    r = await exchange.client.delete("/api/payments")
    assert assert_problem(r, 405)["instance"] == "/api/payments"
    assert "POST" in {m.strip() for m in r.headers["allow"].split(",")}, r.headers


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_a_json_endpoint_refuses_a_body_that_is_not_json_with_415(
    exchange: Exchange, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    for method, path, _ in json_endpoints(exchange.app):
        r = await exchange.client.request(method, path, content=b"{}", headers=headers)
        assert_problem(r, 415)


async def test_json_with_a_charset_is_json(exchange: Exchange) -> None:
    body = b'{"name": "Cleo", "email": "cleo@example.org", "password": "long enough, surely"}'
    r = await exchange.client.post(
        "/api/applications", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert r.status_code == 201, r.text
