"""Watch the embedded node's private PostgreSQL and NATS: when one dies, say so and restart it, or stop the node."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from services.node.processes import ServerProcess, ServerStartError

# Restarts allowed within RESTART_WINDOW seconds before the supervisor gives up and stops the node: a server that
# keeps dying needs a person, not a loop.
MAX_RESTARTS = 3
RESTART_WINDOW = 300.0


class Supervisor(threading.Thread):
    """Polls the servers; restarts one that exited, or calls ``give_up`` with a reason when that fails or repeats.

    Servers it restarts are its children: it lives until ``close()``, because a child is signalled when the thread
    that started it ends (services/node/processes.py)."""

    def __init__(
        self,
        servers: Sequence[tuple[str, ServerProcess]],
        give_up: Callable[[str], None],
        say: Callable[[str], None] = print,
        interval: float = 1.0,
    ) -> None:
        super().__init__(name="timebank supervisor", daemon=True)
        self._servers = list(servers)
        self._give_up = give_up
        self._say = say
        self._interval = interval
        self._closing = threading.Event()
        self._restarts: dict[str, list[float]] = {name: [] for name, _ in servers}
        self.gave_up: str | None = None

    def close(self) -> None:
        """Stop watching (before the servers are stopped on purpose)."""
        self._closing.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()

    def run(self) -> None:
        while not self._closing.wait(self._interval):
            for name, server in self._servers:
                if server.running or self._closing.is_set():
                    continue
                if not self._restart(name, server):
                    return

    def _restart(self, name: str, server: ServerProcess) -> bool:
        code = server.exit_code
        now = time.monotonic()
        recent = [t for t in self._restarts[name] if now - t < RESTART_WINDOW] + [now]
        self._restarts[name] = recent
        if len(recent) > MAX_RESTARTS:
            minutes = RESTART_WINDOW / 60
            return self._abandon(
                f"{name} keeps stopping (exit code {code}; restarted {MAX_RESTARTS} times within {minutes:.0f} minutes)"
            )
        self._say(f"{name} stopped unexpectedly (exit code {code}); restarting it ...")
        server.stop()  # reap the dead process and close its log
        try:
            server.start()
        except ServerStartError as exc:
            return self._abandon(f"{name} stopped (exit code {code}) and could not be restarted: {exc}")
        self._say(f"{name} is running again")
        return True

    def _abandon(self, reason: str) -> bool:
        self.gave_up = reason
        self._say(f"{reason}; stopping the node. Its log is under the data folder.")
        self._give_up(reason)
        return False
