"""The ``timebank`` command: run a node (embedded or against configured servers), keys, migrations, benchmarks."""

from __future__ import annotations

import argparse
import sys

from shared.logs import configure_logging
from shared.settings import Settings, SettingsError, load_settings

# Each command imports its runner when it runs, so that `timebank audit` (say) loads neither Litestar nor the
# services it does not use, and starts fast.


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        raise SystemExit(f"timebank: {exc}") from None
    configure_logging(settings)  # the configured format and level, once the settings are known
    return settings


def cmd_keygen(args: argparse.Namespace) -> int:
    from services.node.keys import run_keygen

    return run_keygen(_settings(args), args.name, args.out)


def cmd_migrate(args: argparse.Namespace) -> int:
    from services.node.database import run_migrate

    return run_migrate(_settings(args))


def cmd_rebuild(args: argparse.Namespace) -> int:
    from services.node.database import run_rebuild

    return run_rebuild(_settings(args), args.service)


def cmd_serve(args: argparse.Namespace) -> int:
    from services.node.serve import run_serve

    return run_serve(_settings(args), args.only)


def cmd_up(args: argparse.Namespace) -> int:
    from services.node.embedded import run_up

    return run_up(_node_options(_settings(args), args))


def cmd_key(args: argparse.Namespace) -> int:
    from services.node.keys import run_key

    return run_key(_node_options(_settings(args), args))


def _node_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line options win over the configuration file and the environment."""
    if getattr(args, "name", None):
        settings.origin = args.name
    if getattr(args, "port", None) is not None:
        settings.http.port = args.port
    if getattr(args, "data_dir", None):
        settings.data_dir = args.data_dir
    return settings


def cmd_peer(args: argparse.Namespace) -> int:
    from services.node.peer import run_peer

    return run_peer(_settings(args), args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "ledger":
        from services.node.bench.ledger import run

        return run(args)
    if args.what == "audit":
        from services.node.bench.audit import run as run_audit_bench

        return run_audit_bench(args)
    if args.what == "exchange":
        from services.node.bench.exchange import run as run_exchange_bench

        return run_exchange_bench(args)
    if args.what == "federation":
        from services.node.bench.federation import run as run_federation_bench

        return run_federation_bench(args)
    if args.what == "ring":
        from services.node.bench.ring import run as run_ring_bench

        return run_ring_bench(args)
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

    up = sub.add_parser(
        "up",
        help="run an embedded node: private PostgreSQL + NATS under the data folder",
        description="Run a whole node on this machine, its data in one folder. Environment overrides: "
        "TIMEBANK_ORIGIN, TIMEBANK_HTTP__PORT, TIMEBANK_HTTP__HOST, TIMEBANK_DATA_DIR (and any setting as "
        "TIMEBANK_<SECTION>__<FIELD>); the options below win over them.",
    )
    up.add_argument(
        "--name",
        help="the network's name, its log origin, e.g. timebank.example/riverside; chosen on the first start "
        "(default: timebank.local/node), fixed afterwards",
    )
    up.add_argument("--port", type=int, help="HTTP port (default 8470)")
    up.add_argument("--data-dir", help="the node's data folder (default .timebank)")
    up.set_defaults(func=cmd_up)
    key = sub.add_parser("key", help="print the verifier keys of this node's network (also while it runs)")
    key.add_argument("--data-dir", help="the node's data folder (default .timebank)")
    key.set_defaults(func=cmd_key)
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
    peer = sub.add_parser(
        "peer", help="add, list or remove neighbouring networks, and act on fork evidence (as a coordinator)"
    )
    from services.node.peer import add_arguments as add_peer_arguments

    add_peer_arguments(peer)
    peer.set_defaults(func=cmd_peer)
    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("what", choices=["ledger", "audit", "exchange", "federation", "ring"])
    bench.add_argument("--transfers", type=int, default=20000, help="transfers per measured phase")
    bench.add_argument("--proof-size", type=int, default=1_000_000, help="log size for the proof benchmark")
    bench.add_argument("--database-url", help="use this database instead of a private PostgreSQL")
    bench.add_argument("--audit-size", type=int, default=1_000_000, help="log size for the audit benchmark")
    bench.add_argument("--members", type=int, default=10_000, help="members loaded for the exchange benchmark")
    bench.add_argument("--listings", type=int, default=100_000, help="listings loaded for the exchange benchmark")
    bench.add_argument("--searches", type=int, default=5000, help="searches in the exchange benchmark")
    bench.add_argument("--exchanges", type=int, default=3000, help="exchanges completed in the exchange benchmark")
    bench.add_argument("--clients", type=int, default=32, help="concurrent clients making exchanges")
    bench.add_argument("--backlog", type=int, default=1_000_000, help="log size replicated as a backlog (federation)")
    bench.add_argument("--trades", type=int, default=6400, help="cross-network trades by 64 payers (federation)")
    bench.add_argument("--networks", type=int, default=10, help="networks in the ring, each peered with two (ring)")
    bench.add_argument("--per-link", type=int, default=20, help="payments each way over each link of the ring (ring)")
    bench.add_argument(
        "--steady-within", type=float, default=600, help="seconds to wait for the ring's steady state (ring)"
    )
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
    configure_logging(Settings())
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
