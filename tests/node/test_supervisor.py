"""The embedded node's supervisor: a dead server is restarted, and one that cannot be (or keeps dying) stops the
node with a reason a person can act on."""

from __future__ import annotations

from pathlib import Path

from services.node.processes import ServerProcess, ServerStartError
from services.node.supervisor import MAX_RESTARTS, RESTART_WINDOW, Supervisor


class Flaky(ServerProcess):
    """A stand-in server: dead until started; ``starts`` says which starts succeed."""

    def __init__(self, tmp: Path, starts: list[bool]) -> None:
        super().__init__(tmp / "flaky.log")
        self.alive = False
        self.starts = starts
        self.started = 0

    @property
    def running(self) -> bool:
        return self.alive

    @property
    def exit_code(self) -> int | None:
        return None if self.alive else -9

    def start(self) -> None:
        self.started += 1
        if not self.starts.pop(0):
            raise ServerStartError("port 5432 is taken")
        self.alive = True

    def stop(self) -> None:
        self.alive = False


def _watch(server: Flaky, kills: int = 0) -> tuple[Supervisor, list[str], list[str]]:
    said: list[str] = []
    reasons: list[str] = []
    supervisor = Supervisor([("PostgreSQL", server)], reasons.append, said.append, interval=0.01)
    supervisor.start()
    for _ in range(kills):
        while not server.alive and supervisor.is_alive():
            supervisor.join(0.01)
        server.alive = False  # killed from outside
        while not server.alive and supervisor.is_alive():
            supervisor.join(0.01)
    supervisor.join(2)
    supervisor.close()
    return supervisor, said, reasons


def test_a_dead_server_is_restarted_and_said_so(tmp_path: Path) -> None:
    server = Flaky(tmp_path, [True])
    supervisor, said, reasons = _watch(server)
    assert said == ["PostgreSQL stopped unexpectedly (exit code -9); restarting it ...", "PostgreSQL is running again"]
    assert server.alive
    assert reasons == []
    assert supervisor.gave_up is None


def test_a_server_that_cannot_restart_stops_the_node_with_the_reason(tmp_path: Path) -> None:
    server = Flaky(tmp_path, [False])
    supervisor, said, reasons = _watch(server)
    assert reasons == ["PostgreSQL stopped (exit code -9) and could not be restarted: port 5432 is taken"]
    assert said[-1] == reasons[0] + "; stopping the node. Its log is under the data folder."
    assert supervisor.gave_up == reasons[0]


def test_a_server_that_keeps_dying_stops_the_node(tmp_path: Path) -> None:
    server = Flaky(tmp_path, [True] * (MAX_RESTARTS + 1))
    supervisor, _, reasons = _watch(server, kills=MAX_RESTARTS)
    assert server.started == MAX_RESTARTS
    window = f"{RESTART_WINDOW / 60:.0f} minutes"
    assert reasons == [f"PostgreSQL keeps stopping (exit code -9; restarted {MAX_RESTARTS} times within {window})"]
    assert supervisor.gave_up == reasons[0]
