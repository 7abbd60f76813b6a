"""Hostile or mistaken requests to a node (ledger at /ledger, federation at /federation) get problems that
describe them: never a server error, a traceback in the log or a path the client did not ask for."""

from __future__ import annotations

import logging

import httpx
import pytest
from litestar import Litestar

from services.federation.app import create_app as create_federation
from services.ledger.app import create_app as create_ledger
from tests.federation.support import TOKENS, Network, auth, running
from tests.hostile import deep_bodies, json_endpoints
from tests.ledger.support import assert_problem


def _apps(net: Network) -> dict[str, Litestar]:
    """The node's apps by mount point, built (not started) only to list their routes."""
    settings = net.settings()
    return {
        "/ledger": create_ledger(settings, database_url=net.database_url, signer=net.signer),
        "/federation": create_federation(
            settings, database_url=net.database_url, ledger_url="http://ledger.invalid", witness_signer=net.witness
        ),
    }


async def _first_admitted(client: httpx.AsyncClient, method: str, path: str, body: str) -> httpx.Response:
    """The answer to the first role the endpoint admits (a refused role never reaches the body)."""
    for role in TOKENS:
        headers = {**auth(role), "Content-Type": "application/json"}
        r = await client.request(method, path, content=body, headers=headers)
        if r.status_code not in (401, 403):
            break
    return r


async def test_deeply_nested_json_is_a_400_problem_without_a_traceback(
    two_networks: tuple[Network, Network], caplog: pytest.LogCaptureFixture
) -> None:
    riverside, _ = two_networks
    apps = _apps(riverside)
    async with running(riverside):
        assert riverside.client is not None
        with caplog.at_level(logging.INFO):
            for prefix, app in apps.items():
                for method, path, body_type in json_endpoints(app):
                    for body in deep_bodies(body_type):
                        r = await _first_admitted(riverside.client, method, prefix + path, body)
                        assert_problem(r, 400)
    tracebacks = [rec.getMessage() for rec in caplog.records if rec.exc_info]
    assert not tracebacks, tracebacks


async def test_problems_name_the_path_the_client_asked_for(two_networks: tuple[Network, Network]) -> None:
    riverside, _ = two_networks
    async with running(riverside):
        assert riverside.client is not None
        headers = {**auth("service"), "Content-Type": "application/json"}
        invalid = await riverside.client.post("/ledger/transfers", content=b"{}", headers=headers)
        assert assert_problem(invalid, 400)["instance"] == "/ledger/transfers"
        missing = await riverside.client.get("/ledger/accounts/nobody", headers=auth("auditor"))
        assert assert_problem(missing, 404)["instance"] == "/ledger/accounts/nobody"
        unrouted = await riverside.client.get("/federation/nowhere")
        assert assert_problem(unrouted, 404)["instance"] == "/federation/nowhere"


async def test_a_method_not_allowed_names_the_allowed_ones(two_networks: tuple[Network, Network]) -> None:
    riverside, _ = two_networks
    async with running(riverside):
        assert riverside.client is not None
        r = await riverside.client.delete("/ledger/transfers", headers=auth("service"))
        assert assert_problem(r, 405)["instance"] == "/ledger/transfers"
        assert "POST" in {m.strip() for m in r.headers["allow"].split(",")}, r.headers
        r = await riverside.client.put("/federation/peers", headers=auth("coordinator"))
        assert_problem(r, 405)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert {"GET", "POST"} <= allowed, r.headers


async def test_a_json_endpoint_refuses_a_body_that_is_not_json_with_415(two_networks: tuple[Network, Network]) -> None:
    riverside, _ = two_networks
    apps = _apps(riverside)
    async with running(riverside):
        assert riverside.client is not None
        for prefix, app in apps.items():
            for method, path, _ in json_endpoints(app):
                for role in TOKENS:
                    r = await riverside.client.request(
                        method, prefix + path, content=b"{}", headers={**auth(role), "Content-Type": "text/plain"}
                    )
                    if r.status_code not in (401, 403):
                        break
                assert_problem(r, 415)
