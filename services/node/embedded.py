"""``timebank up``: the embedded node, with a private PostgreSQL and NATS under data_dir, migrated and served."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path

import asyncpg
import msgspec
import uvicorn

from services.federation.access import authorization, write_authorization
from services.federation.names import network_name
from services.node.database import migrate_all
from services.node.lock import AlreadyRunning, hold
from services.node.nats import NatsServer
from services.node.postgres import PostgresServer
from services.node.processes import ServerStartError
from services.node.serve import node_server
from services.node.supervisor import Supervisor
from services.node.welcome import address, welcome
from shared.note import CosignatureSigner, Signer, read_signer_key, write_signer_key
from shared.settings import ApiToken, Settings

# The user our own services sign in to our NATS server as.
NATS_USER = "timebank"


ROLES = ("coordinator", "service", "auditor", "federation")


def _embedded_tokens(data_dir: Path) -> dict[str, str]:
    """Tokens for the embedded node's coordinator, services and federation, made once and kept in data_dir (0600);
    a role added since the file was written gets its token then."""
    path = data_dir / "tokens.json"
    tokens: dict[str, str] = dict(msgspec.json.decode(path.read_bytes())) if path.exists() else {}
    missing = [role for role in ROLES if role not in tokens]
    if missing:
        tokens.update({role: f"{role}-{secrets.token_urlsafe(24)}" for role in missing})
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(tokens)))
        os.replace(path.with_suffix(".tmp"), path)
    return tokens


def _secret_file(path: Path) -> str:
    """A random secret kept in ``path`` (0600), made the first time."""
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def _nats_server(settings: Settings, data_dir: Path) -> NatsServer:
    """Our private NATS server: JetStream in our own domain, our services signed in as ``timebank``, and each
    neighbour we issued a credential to allowed what peering needs (services/federation/access.py)."""
    name = settings.federation.name or network_name(settings.origin)
    settings.nats.user = settings.nats.user or NATS_USER
    settings.nats.password = settings.nats.password or _secret_file(data_dir / "nats.password")
    issued = {}
    for peer in settings.federation.peers:
        if peer.issued_password:
            issued[peer.name or network_name(peer.origin)] = peer.issued_password
    # The users live in a file of their own, which the federation rewrites (and has the server reload) when a
    # coordinator adds or removes a peer.
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    settings.nats.authorization_file = str(store / "authorization.conf")
    settings.nats.pid_file = str(store / "nats-server.pid")
    write_authorization(
        Path(settings.nats.authorization_file),
        authorization(name, settings.nats.user, settings.nats.password, issued),
    )
    return NatsServer(
        store,
        server_name=f"timebank-{name}",
        jetstream_domain=name,
        includes=[Path(settings.nats.authorization_file)],
        pid_file=Path(settings.nats.pid_file),
    )


def _origin(settings: Settings, default_origin: str) -> None:
    """The network's name is fixed by its signing key: an existing node keeps its own; a different one asked for
    explicitly is refused, since checkpoints already signed under the old name could not be checked any more."""
    if not settings.key_path.exists():
        return
    named = read_signer_key(settings.key_path).name
    if named == settings.origin:
        return
    if settings.origin == default_origin:
        settings.origin = named
        return
    raise SystemExit(
        f"timebank: the node in {settings.data_dir} is the network {named}; its name cannot change"
        f" (asked for {settings.origin}). Use another --data-dir for a new network."
    )


def _port_free(settings: Settings) -> None:
    """Refuse before starting anything when the HTTP port is taken (by another program, or another node)."""
    host, port = settings.http.host, settings.http.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(
                f"timebank: cannot serve on {host}:{port} ({exc.strerror}); choose another port with --port"
            ) from None


def run_up(settings: Settings) -> int:
    """Embedded node: private PostgreSQL and NATS under data_dir, key and tokens made if missing; supervised."""
    data_dir = Path(settings.data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = hold(data_dir, address(settings))
    except AlreadyRunning as exc:
        raise SystemExit(f"timebank: {exc}") from None
    _origin(settings, Settings().origin)
    _port_free(settings)
    if not settings.key_path.exists():
        write_signer_key(settings.key_path, Signer.generate(settings.origin))
        print(f"created the network signing key {settings.key_path} for the network {settings.origin}")
        if settings.origin == Settings().origin:
            print("  (the default name: choose your own the first time, with --name timebank.example/riverside)")
    if not settings.witness_key_path.exists():
        write_signer_key(settings.witness_key_path, CosignatureSigner.generate(f"{settings.origin}/witness"))
        print(f"created the witness key {settings.witness_key_path}")
    tokens = _embedded_tokens(data_dir)
    configured = [
        ApiToken(name=f"embedded-{role}", role=role, sha256=hashlib.sha256(t.encode()).hexdigest())  # type: ignore[arg-type]
        for role, t in tokens.items()
    ]
    settings.ledger.tokens = [*settings.ledger.tokens, *configured]
    settings.exchange.ledger_token = settings.exchange.ledger_token or tokens["service"]
    settings.federation.ledger_token = settings.federation.ledger_token or tokens["federation"]

    postgres = PostgresServer(data_dir / "postgres")
    nats = _nats_server(settings, data_dir)
    supervisor: Supervisor | None = None
    try:
        first = not (postgres.data_dir / "PG_VERSION").exists()
        print("starting PostgreSQL" + (" (first start: creating its data)" if first else "") + " ...", flush=True)
        postgres.start()
        print("starting NATS (JetStream) ...", flush=True)
        nats.start()
        settings.nats.url = nats.url
        database_url = postgres.dsn("timebank")
        if not _database_exists(postgres):
            postgres.create_database("timebank")
        applied = asyncio.run(migrate_all(database_url))
        if applied:
            print(f"migrated the database ({len(applied)} migrations)", flush=True)
        print("starting the ledger, the federation and the exchange ...", flush=True)
        server = node_server(settings, database_url)

        def give_up(reason: str) -> None:
            server.should_exit = True

        supervisor = Supervisor([("PostgreSQL", postgres), ("NATS", nats)], give_up)
        supervisor.start()
        name = settings.federation.name or network_name(settings.origin)
        greeter = threading.Thread(
            target=_greet,
            args=(server, settings, name, tokens, data_dir / "tokens.json", database_url),
            name="timebank welcome",
            daemon=True,
        )
        greeter.start()
        server.run()
        if not server.started:
            return 1  # uvicorn said why (the port is taken, say)
    except KeyboardInterrupt:
        pass
    except ServerStartError as exc:
        raise SystemExit(f"timebank: {exc}") from None
    finally:
        print("stopping ...", flush=True)
        if supervisor is not None:
            supervisor.close()
        nats.stop()
        postgres.stop()
        lock.close()
    if supervisor is not None and supervisor.gave_up:
        print(f"timebank: the node stopped: {supervisor.gave_up}", file=sys.stderr)
        return 1
    return 0


def _greet(
    server: uvicorn.Server, settings: Settings, name: str, tokens: dict[str, str], path: Path, database_url: str
) -> None:
    """Print the welcome once the server answers (``server.started`` is set after every app's startup)."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    print(welcome(settings, name, tokens, path, database_url), flush=True)


def _database_exists(postgres: PostgresServer) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'timebank'"))
        finally:
            await conn.close()

    return asyncio.run(check())
