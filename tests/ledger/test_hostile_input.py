"""Hostile request bodies on the ledger: answered with problems, never a server error or a traceback in the log."""

from __future__ import annotations

import logging

import pytest

from tests.hostile import deep_bodies, json_endpoints
from tests.ledger.conftest import TOKENS, Ledger, auth
from tests.ledger.support import assert_problem


async def test_deeply_nested_json_is_a_400_problem_without_a_traceback(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints = list(json_endpoints(ledger.app))
    assert len(endpoints) >= 5, endpoints
    for method, path, body_type in endpoints:
        for body in deep_bodies(body_type):
            # The first role the endpoint admits reaches its body.
            for role in TOKENS:
                headers = {**auth(role), "Content-Type": "application/json"}
                with caplog.at_level(logging.INFO):
                    r = await ledger.client.request(method, path, content=body, headers=headers)
                if r.status_code not in (401, 403):
                    break
            assert_problem(r, 400)
    assert not [rec for rec in caplog.records if rec.exc_info], [rec.getMessage() for rec in caplog.records]


async def test_problems_name_the_path_asked_for_when_served_alone(ledger: Ledger) -> None:
    """Served on its own (not under the node's /ledger), the ledger's problems name its own paths."""
    r = await ledger.client.post(
        "/transfers", content=b"{}", headers={**auth("service"), "Content-Type": "application/json"}
    )
    assert assert_problem(r, 400)["instance"] == "/transfers"
    r = await ledger.client.delete("/transfers", headers=auth("service"))
    assert assert_problem(r, 405)["instance"] == "/transfers"
    assert "POST" in r.headers["allow"], r.headers
    assert assert_problem(await ledger.client.get("/nowhere"), 404)["instance"] == "/nowhere"
