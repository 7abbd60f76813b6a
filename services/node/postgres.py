"""A private PostgreSQL cluster as a supervised child process, and finding the distribution's binaries."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from services.node.processes import (
    LOCALHOST,
    ExitedEarly,
    MissingBinaryError,
    RunAs,
    ServerProcess,
    ServerStartError,
    child_env,
    free_port,
    start_attempts,
)

__all__ = ["PG_BINDIR_ENV", "PG_SUPERUSER", "PostgresServer", "find_postgres_bindir"]

PG_SUPERUSER = "postgres"
PG_BINDIR_ENV = "TIMEBANK_PG_BINDIR"


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


class PostgresServer(ServerProcess):
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
        run_as = RunAs.lookup(PG_SUPERUSER) if os.geteuid() == 0 else None
        self._prepare_data_dir(run_as)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, run_as)
        for may_retry in start_attempts(self._auto_port):
            self._clear_stale_pid_file()
            self._launch(self._server_argv(bindir), run_as)
            try:
                self._wait_ready(f"postgres on port {self.port}", self.startup_timeout, self._accepting)
            except ExitedEarly as exc:
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

    def _prepare_data_dir(self, run_as: RunAs | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if run_as is not None and not run_as.can_traverse(self.data_dir.parent):
            raise ServerStartError(
                f"the `{run_as.name}` user cannot reach {self.data_dir}: running as root, PostgreSQL runs "
                f"as `{run_as.name}` and needs search permission on every parent directory "
                "(use services.node.processes.server_tempdir() or chmod the parents)"
            )
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            raise ServerStartError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        if run_as is not None:
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        self.data_dir.chmod(0o700)

    def _initdb(self, bindir: Path, run_as: RunAs | None) -> None:
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
            env=child_env(run_as),
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
            env=child_env(None),
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
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, env=child_env(None)
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
