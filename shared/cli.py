"""The ``timebank`` command: run a node (embedded or against configured servers), keys, migrations, benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from shared.settings import ApiToken, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from shared.processes import PostgresServer

log = logging.getLogger("timebank")


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except SettingsError as exc:
        raise SystemExit(f"timebank: {exc}") from None


def cmd_keygen(args: argparse.Namespace) -> int:
    from shared.note import Signer, write_signer_key

    settings = _settings(args)
    name = args.name or settings.origin
    path = Path(args.out) if args.out else settings.key_path
    signer = Signer.generate(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_signer_key(path, signer)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"timebank: cannot write {path}: {exc}") from None
    print(f"wrote signing key {path} (mode 0600)")
    print(f"verifier key: {signer.verifier().to_text()}")
    return 0


async def _migrate(url: str) -> list[str]:
    from services.exchange import store as exchange_store
    from services.ledger import store as ledger_store
    from shared.db import create_pool, migrate

    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            return [
                *await migrate(conn, "ledger", ledger_store.MIGRATIONS),
                *[f"exchange/{n}" for n in await migrate(conn, "exchange", exchange_store.MIGRATIONS)],
            ]
    finally:
        await pool.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.database.url:
        raise SystemExit("timebank: set database.url (or TIMEBANK_DATABASE__URL) to migrate")
    applied = asyncio.run(_migrate(settings.database.url))
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


async def _rebuild_exchange(url: str) -> int:
    import asyncpg

    from services.exchange import projections

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            return await projections.rebuild(conn)
    except (asyncpg.InvalidSchemaNameError, asyncpg.UndefinedTableError):
        raise SystemExit("timebank: the database has no exchange schema yet; run `timebank migrate`") from None
    finally:
        await conn.close()


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Replay the service's events into emptied read models, in one transaction (readers wait, never see gaps)."""
    settings = _settings(args)
    if not settings.database.url:
        raise SystemExit("timebank: set database.url (or TIMEBANK_DATABASE__URL) to rebuild")
    streams = asyncio.run(_rebuild_exchange(settings.database.url))
    print(f"rebuilt the {args.service}'s read models: replayed {streams} streams")
    return 0


def _serve(settings: Settings, database_url: str, only: str | None = None) -> None:
    """Serve the node: the exchange at / and the ledger at /ledger, or just one of them (``only``)."""
    import uvicorn

    app = build_node(settings, database_url, only)
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
    print(f"timebank node {settings.origin} serving on http://{settings.http.host}:{settings.http.port}")
    uvicorn.Server(config).run()


def build_node(settings: Settings, database_url: str, only: str | None = None) -> Any:
    from services.exchange.app import create_app as create_exchange
    from services.ledger.app import create_app as create_ledger
    from shared.node import Node

    if only == "ledger":
        return create_ledger(settings, database_url=database_url)
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::", "") else settings.http.host
    ledger_url = settings.exchange.ledger_url or f"http://{host}:{settings.http.port}/ledger"
    try:
        exchange = create_exchange(settings, database_url=database_url, ledger_url=ledger_url)
    except ValueError as exc:
        raise SystemExit(f"timebank: {exc}") from None
    if only == "exchange":
        return exchange
    return Node({"/ledger": create_ledger(settings, database_url=database_url), "": exchange})


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.database.url:
        raise SystemExit("timebank: set database.url (or TIMEBANK_DATABASE__URL); `timebank up` runs embedded")
    if not settings.key_path.exists():
        raise SystemExit(f"timebank: no signing key at {settings.key_path}; create one with `timebank keygen`")
    _serve(settings, settings.database.url, args.only)
    return 0


def _embedded_tokens(data_dir: Path) -> dict[str, str]:
    """Tokens for the embedded node's coordinator and services, made once and kept in data_dir (0600)."""
    path = data_dir / "tokens.json"
    if path.exists():
        return dict(msgspec.json.decode(path.read_bytes()))
    tokens = {role: f"{role}-{secrets.token_urlsafe(24)}" for role in ("coordinator", "service", "auditor")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(tokens)))
    return tokens


def cmd_up(args: argparse.Namespace) -> int:
    """Embedded node: private PostgreSQL and NATS under data_dir, key and tokens made if missing."""
    from shared.note import Signer, write_signer_key
    from shared.processes import NatsServer, PostgresServer

    settings = _settings(args)
    data_dir = Path(settings.data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.key_path.exists():
        write_signer_key(settings.key_path, Signer.generate(settings.origin))
        print(f"created the network signing key {settings.key_path}")
    tokens = _embedded_tokens(data_dir)
    configured = [
        ApiToken(name=f"embedded-{role}", role=role, sha256=hashlib.sha256(t.encode()).hexdigest())  # type: ignore[arg-type]
        for role, t in tokens.items()
    ]
    settings.ledger.tokens = [*settings.ledger.tokens, *configured]
    settings.exchange.ledger_token = settings.exchange.ledger_token or tokens["service"]

    postgres = PostgresServer(data_dir / "postgres")
    nats = NatsServer(data_dir / "nats", server_name="timebank")
    try:
        print("starting PostgreSQL ...", flush=True)
        postgres.start()
        print("starting NATS (JetStream) ...", flush=True)
        nats.start()
        settings.nats.url = nats.url
        database_url = postgres.dsn("timebank")
        if not _database_exists(postgres):
            postgres.create_database("timebank")
        applied = asyncio.run(_migrate(database_url))
        if applied:
            print("migrated: " + ", ".join(applied))
        print(f"data in {data_dir}; tokens in {data_dir / 'tokens.json'}")
        print(f"  coordinator token: {tokens['coordinator']}")
        print(f"  service token:     {tokens['service']}")
        print("Ctrl-C stops the node.")
        _serve(settings, database_url)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        nats.stop()
        postgres.stop()
    return 0


def _database_exists(postgres: PostgresServer) -> bool:
    import asyncpg

    async def check() -> bool:
        conn = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'timebank'"))
        finally:
            await conn.close()

    return asyncio.run(check())


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "ledger":
        from services.ledger.bench import run

        return run(args)
    if args.what == "audit":
        from services.audit.bench import run as run_audit_bench

        return run_audit_bench(args)
    if args.what == "exchange":
        from services.exchange.bench import run as run_exchange_bench

        return run_exchange_bench(args)
    raise SystemExit(f"timebank: no benchmark called {args.what}")


def cmd_audit(args: argparse.Namespace) -> int:
    from services.audit.command import run_audit

    return run_audit(args)


def cmd_export(args: argparse.Namespace) -> int:
    from services.audit.command import run_export

    return run_export(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timebank", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $TIMEBANK_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="run an embedded node: private PostgreSQL + NATS under data_dir").set_defaults(
        func=cmd_up
    )
    serve = sub.add_parser("serve", help="serve against the configured database and NATS")
    serve.add_argument(
        "--only", choices=["ledger", "exchange"], help="serve one service (default: both; the ledger under /ledger)"
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    rebuild = sub.add_parser("rebuild", help="replay a service's events into fresh read models")
    rebuild.add_argument("service", choices=["exchange"])
    rebuild.set_defaults(func=cmd_rebuild)
    keygen = sub.add_parser("keygen", help="write a new network signing key (mode 0600)")
    keygen.add_argument("--name", help="key name: the log origin (default: settings origin)")
    keygen.add_argument("--out", help="file to write (default: settings key_file or <data_dir>/network.key)")
    keygen.set_defaults(func=cmd_keygen)
    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("what", choices=["ledger", "audit", "exchange"])
    bench.add_argument("--transfers", type=int, default=20000, help="transfers per measured phase")
    bench.add_argument("--proof-size", type=int, default=1_000_000, help="log size for the proof benchmark")
    bench.add_argument("--database-url", help="use this database instead of a private PostgreSQL")
    bench.add_argument("--audit-size", type=int, default=1_000_000, help="log size for the audit benchmark")
    bench.add_argument("--members", type=int, default=10_000, help="members loaded for the exchange benchmark")
    bench.add_argument("--listings", type=int, default=100_000, help="listings loaded for the exchange benchmark")
    bench.add_argument("--searches", type=int, default=5000, help="searches in the exchange benchmark")
    bench.add_argument("--exchanges", type=int, default=3000, help="exchanges completed in the exchange benchmark")
    bench.add_argument("--clients", type=int, default=32, help="concurrent clients making exchanges")
    bench.set_defaults(func=cmd_bench)
    audit = sub.add_parser("audit", help="verify a node's public log (or an exported one) from the outside")
    export = sub.add_parser("export", help="copy a node's public log into a directory that `audit` reads offline")
    from services.audit.command import add_audit_arguments, add_export_arguments

    add_audit_arguments(audit)
    audit.set_defaults(func=cmd_audit)
    add_export_arguments(export)
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
