"""Supervise private servers as child processes: the base the PostgreSQL and NATS servers share.

Used by the pytest plugin, the embedded launcher and the benchmarks.  Children run in their
own session, are reaped by ``stop()``, are stopped at interpreter exit, and on
Linux receive a signal when the thread that started them dies (so a parent
killed by SIGTERM or SIGKILL does not leave servers behind).  Start servers
from a long-lived thread (normally the main thread) for that reason.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "LOCALHOST",
    "ExitedEarly",
    "MissingBinaryError",
    "RunAs",
    "ServerProcess",
    "ServerStartError",
    "child_env",
    "free_port",
    "server_tempdir",
    "start_attempts",
]

LOCALHOST = "127.0.0.1"

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


# --------------------------------------------------------------------------- child processes


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account that servers run as when we are root."""

    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str

    @classmethod
    def lookup(cls, name: str) -> RunAs:
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


def child_env(run_as: RunAs | None) -> dict[str, str]:
    """The environment for a server or its client tools: ours without PG* settings, as ``run_as`` if given."""
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


_running: dict[int, ServerProcess] = {}
_running_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _running_lock:
        servers = list(_running.values())
    for server in reversed(servers):
        server.stop()


atexit.register(_stop_all_at_exit)


class ServerProcess:
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
    def exit_code(self) -> int | None:
        """The exit code of a server process that ended (None while it runs, or if none was started)."""
        return self._proc.poll() if self._proc is not None else None

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

    def _launch(self, argv: Sequence[str], run_as: RunAs | None) -> subprocess.Popen[bytes]:
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
                env=child_env(run_as),
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
                raise ExitedEarly(f"{what} exited during startup (code {code}); log tail:\n{tail}", tail)
            if probe():
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise ServerStartError(f"{what} not ready after {timeout:.0f}s; log tail:\n{tail}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)


class ExitedEarly(ServerStartError):
    """The server process died while starting; ``port_in_use`` says whether another port may help."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.port_in_use = "address already in use" in log_tail.lower()


def start_attempts(auto_port: bool) -> Iterator[bool]:
    """Yield once per start attempt; True while another attempt may follow."""
    count = 3 if auto_port else 1
    for index in range(count):
        yield index < count - 1
