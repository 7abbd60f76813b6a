"""Fixtures for federation tests: two networks, riverside and hillside, each with its own database and NATS."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from services.federation import access
from services.node.postgres import PostgresServer
from services.node.processes import server_tempdir
from services.node.testing import NatsFactory
from shared.note import CosignatureSigner, Signer
from tests.federation.support import LOCAL_USER, Network

NAMES = ("riverside", "hillside", "lakeside")


def _network(postgres_server: PostgresServer, nats_factory: NatsFactory, name: str, number: int) -> Network:
    """A network whose NATS server admits its own services and, by the credentials it issued, the others."""
    database = f"fed_{name}_{number}"
    postgres_server.create_database(database)
    origin = f"timebank.test/{name}"
    issued = {other: f"{other}-on-{name}-{secrets.token_hex(8)}" for other in NAMES if other != name}
    local = secrets.token_hex(8)
    # The server reads its users from a file the federation rewrites (and has the server reload) as peers change.
    config = server_tempdir(f"timebank-test-{name}-nats-")
    authorization, pid_file = config / "authorization.conf", config / "nats.pid"
    access.write_authorization(authorization, access.authorization(name, LOCAL_USER, local, issued))
    return Network(
        origin=origin,
        signer=Signer.generate(origin),
        witness=CosignatureSigner.generate(f"{origin}/witness"),
        database_url=postgres_server.dsn(database),
        nats=nats_factory(
            f"{name}-{number}",
            jetstream_domain=name,
            includes=[authorization],
            pid_file=pid_file,
        ),
        authorization_file=authorization,
        pid_file=pid_file,
        nats_password=local,
        issued=issued,
    )


_numbers = iter(range(1, 10**6))


@pytest.fixture
def two_networks(postgres_server: PostgresServer, nats_factory: NatsFactory) -> Iterator[tuple[Network, Network]]:
    """Riverside and hillside, not yet running, and not yet each other's peers."""
    nets = _networks(postgres_server, nats_factory, NAMES[:2])
    yield nets[0], nets[1]
    _remove(postgres_server, nets)


@pytest.fixture
def three_networks(
    postgres_server: PostgresServer, nats_factory: NatsFactory
) -> Iterator[tuple[Network, Network, Network]]:
    """Riverside, hillside and lakeside, not yet running, and not yet one another's peers."""
    nets = _networks(postgres_server, nats_factory, NAMES)
    yield nets[0], nets[1], nets[2]
    _remove(postgres_server, nets)


def _networks(postgres_server: PostgresServer, nats_factory: NatsFactory, names: tuple[str, ...]) -> list[Network]:
    number = next(_numbers)
    return [_network(postgres_server, nats_factory, name, number) for name in names]


def _remove(postgres_server: PostgresServer, nets: list[Network]) -> None:
    for net in nets:
        net.nats.stop()
        postgres_server.drop_database(net.database_url.rsplit("/", 1)[-1])
