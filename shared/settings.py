"""Node configuration: a TOML file plus ``TIMEBANK_*`` environment overrides, decoded into Structs.

An environment variable ``TIMEBANK_<SECTION>__<FIELD>`` overrides ``[section] field`` (for example
``TIMEBANK_DATABASE__URL``); top-level fields drop the section (``TIMEBANK_ORIGIN``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

ENV_PREFIX = "TIMEBANK_"

# "federation": the federation service, the only caller that may record decisions on neighbours' transfers.
Role = Literal["service", "coordinator", "auditor", "federation"]


class ApiToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bearer credential; only the SHA-256 of the token (hex) is configured, never the token."""

    name: str
    role: Role
    sha256: str


class DatabaseSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # None means "the embedded cluster under data_dir" (``timebank up``).
    url: str | None = None
    min_pool: int = 2
    max_pool: int = 20


class NatsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Our own NATS server; None: the federation does not run (``timebank up`` sets it to its private server).
    url: str | None = None
    user: str | None = None
    password: str | None = None
    # Where our server's configuration includes its authorization block from, and its pid file: when a peer is
    # added or removed, the federation rewrites the block and has the server reload it. None: the operator keeps
    # the server's users (deploy/ shows how), and peers added at run time need a reload by hand.
    authorization_file: str | None = None
    pid_file: str | None = None


class HttpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8470
    max_body_bytes: int = 64 * 1024
    # Addresses (or networks, e.g. "10.0.0.0/8") of the reverse proxies whose X-Forwarded-For names the client:
    # the per-address sign-in limit counts that address. None by default: the connection's own address counts,
    # and a client cannot choose its own address by sending the header.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)


class LedgerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Network-wide default credit limit in minutes (<= 0): a new member may owe up to this many.
    default_floor: int = -600
    # Upper bound on commands decided in one group-commit transaction.
    max_batch: int = 2000
    tokens: list[ApiToken] = msgspec.field(default_factory=list)


class ExchangeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The ledger's base URL; None: the ledger served by this same node (at /ledger).
    ledger_url: str | None = None
    # The service bearer token the exchange shows the ledger (a secret: set it by environment or a private file).
    ledger_token: str | None = None
    # New listings expire after this many days unless their member says otherwise.
    listing_days: int = 90
    invitation_days: int = 14
    session_days: int = 30
    # Failed sign-ins allowed per email address (and per client address) within the window.
    login_max_failures: int = 5
    login_max_failures_per_address: int = 50
    login_window_seconds: int = 900
    # Mark the session cookie Secure (serve over HTTPS, e.g. behind a TLS-terminating proxy).
    secure_cookies: bool = False


class PeerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A neighbour network, configured explicitly: who it is, the keys that prove it, and how to reach it."""

    # Its log origin, e.g. "timebank.example/hillside".
    origin: str
    # Its log's verifier key and its witness's cosignature verifier key (C2SP vkey text).
    log_key: str
    witness_key: str | None = None
    # Its NATS server, and the credential it issued us there.
    nats_url: str
    nats_user: str | None = None
    nats_password: str | None = None
    # Its name on NATS; default: the origin's last path segment.
    name: str | None = None
    # The password we issued it for our NATS server (user ``peer-<name>``); a secret.
    issued_password: str | None = None
    # How many minutes its members may owe ours: the floor of its clearing account is minus this.
    trust_limit: int = 0


class WitnessedLogSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A log our witness cosigns besides our neighbours' (one that no one here wrote): its origin and log key."""

    origin: str
    # Its checkpoints' verifier key (C2SP vkey text), named after the origin.
    key: str


class WitnessSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Any C2SP tlog-witness (a public witness network, say) our log asks to cosign its checkpoints."""

    # Its submission prefix: requests go to <url>/add-checkpoint.
    url: str
    # Its cosignature verifier key (C2SP vkey text).
    key: str


class FederationSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Our name on NATS (subjects timebank.<name>.*); default: the origin's last path segment.
    name: str | None = None
    peers: list[PeerSettings] = msgspec.field(default_factory=list)
    # Our witness's cosignature key (C2SP note key format, algorithm 0x04); default: <data_dir>/witness.key.
    witness_key_file: str | None = None
    # Our NATS server's address as neighbours reach it (told to a peer when it is added); default: nats.url.
    public_nats_url: str | None = None
    # Witnesses besides our neighbours that our log asks for cosignatures.
    witnesses: list[WitnessSettings] = msgspec.field(default_factory=list)
    # Logs our witness cosigns besides the neighbours' (coordinators add more at run time).
    witnessed_logs: list[WitnessedLogSettings] = msgspec.field(default_factory=list)
    # The federation's bearer token for the ledger (a secret: set it by environment or a private file).
    ledger_token: str | None = None
    # Copies JetStream keeps of our log stream: 1 on one server, 3 on a 3-node cluster (deploy/).
    stream_replicas: int = 1
    # How long the publisher's question for newly signed checkpoints waits at the ledger while the log is quiet
    # (a long poll: new checkpoints are answered at once).
    poll_seconds: float = 2.0


LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


class LogSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # "json": one JSON object a line (for collectors); "console": readable, coloured on a terminal;
    # "auto": console when stderr is a terminal, JSON otherwise.
    format: LogFormat = "auto"
    level: LogLevel = "info"


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Log origin, e.g. "timebank.example/riverside"; the key name in signed checkpoints.
    origin: str = "timebank.local/node"
    data_dir: str = ".timebank"
    # Network signing key in the note PRIVATE+KEY format; default: <data_dir>/network.key.
    key_file: str | None = None
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    ledger: LedgerSettings = msgspec.field(default_factory=LedgerSettings)
    exchange: ExchangeSettings = msgspec.field(default_factory=ExchangeSettings)
    federation: FederationSettings = msgspec.field(default_factory=FederationSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)

    @property
    def key_path(self) -> Path:
        return Path(self.key_file) if self.key_file else Path(self.data_dir) / "network.key"

    @property
    def witness_key_path(self) -> Path:
        wanted = self.federation.witness_key_file
        return Path(wanted) if wanted else Path(self.data_dir) / "witness.key"


class SettingsError(ValueError):
    """The configuration file or environment does not describe a valid node."""


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target = raw
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SettingsError(f"{name}: {part} is not a section")
        target[path[-1]] = value


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any) then apply environment overrides; raise SettingsError if invalid."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = msgspec.toml.decode(Path(path).read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise SettingsError(f"cannot read configuration {path}: {exc}") from exc
    _apply_env(raw, env)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid configuration: {exc}") from exc
