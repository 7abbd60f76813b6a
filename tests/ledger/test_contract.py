"""Contract test: schemathesis generates requests from the ledger's own OpenAPI schema; none may cause a 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from services.node.postgres import PostgresServer
from shared.note import Signer, write_signer_key
from tests.ledger.conftest import ORIGIN, auth
from tests.ledger.processes import serve


@pytest.fixture(scope="module")
def ledger_server(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `timebank serve` process on its own database; yields its base URL."""
    postgres_server.create_database("contract")
    workdir = tmp_path_factory.mktemp("contract")
    write_signer_key(workdir / "network.key", Signer.generate(ORIGIN))
    with serve(workdir, postgres_server.dsn("contract"), workdir / "network.key") as base:
        # Some real accounts and a transfer, so generated requests can also meet existing state.
        headers = auth("coordinator")
        a = httpx.post(base + "/accounts", json={"key": "a"}, headers=headers).json()["id"]
        b = httpx.post(base + "/accounts", json={"key": "b"}, headers=headers).json()["id"]
        httpx.post(base + "/transfers", json={"key": "t", "payer": a, "payee": b, "minutes": 5}, headers=headers)
        # A neighbour with a short origin that generated cross-network decisions can hit.
        httpx.post(base + "/accounts", json={"key": "p", "kind": "peer", "peer": "0", "floor": -60}, headers=headers)
        yield base


def test_generated_requests_never_cause_a_server_error(ledger_server: str) -> None:
    """Every operation in the served schema, with generated (valid and invalid) inputs, as a coordinator and
    anonymously: never a 5xx, and every refusal is an RFC 9457 problem document."""
    schema = schemathesis.openapi.from_url(ledger_server + "/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=int(os.environ.get("CONTRACT_EXAMPLES", "100")),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            # A long poll holds its answer up to the ``wait`` it is given (test_checkpoints_wait.py covers that):
            # generated waits are kept short, so that no call outlasts the client's timeout.
            wait = case.query.get("wait") if isinstance(case.query, dict) else None
            if isinstance(wait, int | float) and wait > 0.1:
                case.query["wait"] = 0.1
            for headers in (auth("coordinator"), {}):
                response = case.call(base_url=ledger_server, headers=headers)
                where = f"{case.method} {case.formatted_path}"
                assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
                if response.status_code >= 400:
                    content_type = "".join(response.headers.get("content-type", []))
                    assert content_type.startswith("application/problem+json"), f"{where}: {response.text}"

        check()
