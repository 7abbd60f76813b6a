"""Pytest fixtures that run private PostgreSQL and NATS servers, and a real browser, for the test session.

The server fixtures are synchronous (they only manage processes), so they work with
any event loop scope. ``browser`` is async (Playwright's async API) on the session loop.
Chromium is installed by the test command's setup (``tests/setup-browser``), never by a fixture.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from services.node.nats import NatsServer
from services.node.postgres import PostgresServer
from services.node.processes import MissingBinaryError, server_tempdir

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = [
    "NatsFactory",
    "browser",
    "chromium_executable",
    "database_url",
    "nats_factory",
    "nats_server",
    "postgres_server",
    "server_tmp_path",
]

CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")

# Litestar's app constructor imports its OpenTelemetry plugin every time; without opentelemetry installed that
# import fails, and it is tried again for every app. Tests build apps while other apps run on test-client and
# server threads, and a failing import retried from two threads at once trips CPython 3.11's module locks (a
# KeyError in importlib, or a hang). Recording the failure once makes the import fail at once, without the locks.
if importlib.util.find_spec("opentelemetry") is None:
    sys.modules.setdefault("litestar.plugins.opentelemetry", None)  # type: ignore[arg-type]

_database_numbers = itertools.count(1)


class NatsFactory:
    """Starts extra NATS servers on demand; all are stopped by ``close()``."""

    def __init__(self, root: Path) -> None:
        """Keep each server's store under ``root``."""
        self.root = root
        self.servers: list[NatsServer] = []

    def __call__(
        self,
        server_name: str | None = None,
        *,
        port: int | None = None,
        jetstream_domain: str | None = None,
        leafnode_port: int | None = None,
        leafnode_remotes: Sequence[str] = (),
        extra_config: str = "",
        includes: Sequence[Path] = (),
        pid_file: Path | None = None,
    ) -> NatsServer:
        """Start and return a new JetStream-enabled server (``leafnode_port=0`` picks a free port)."""
        name = server_name or f"nats-{len(self.servers) + 1}"
        store_dir = self.root / f"{len(self.servers) + 1}-{_safe_name(name)}"
        server = NatsServer(
            store_dir,
            port,
            server_name=name,
            jetstream_domain=jetstream_domain,
            leafnode_port=leafnode_port,
            leafnode_remotes=leafnode_remotes,
            extra_config=extra_config,
            includes=includes,
            pid_file=pid_file,
        )
        self.servers.append(server)
        _start_or_fail(server)
        return server

    def close(self) -> None:
        """Stop every server this factory started, newest first."""
        for server in reversed(self.servers):
            server.stop()


def _start_or_fail(server: PostgresServer | NatsServer) -> None:
    """Start ``server``; a missing binary fails the test (never skips it)."""
    missing = None
    try:
        server.start()
    except MissingBinaryError as exc:
        missing = str(exc)
    if missing is not None:
        pytest.fail(missing, pytrace=False)


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One fast (fsync=off) PostgreSQL server for the whole session."""
    root = server_tempdir("timebank-test-pg-")
    server = PostgresServer(root / "data", fast=True)
    try:
        _start_or_fail(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a fresh, empty database (dropped after the test)."""
    name = f"t{next(_database_numbers)}_{_safe_name(request.node.name)}"[:63]
    postgres_server.create_database(name)
    yield postgres_server.dsn(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def nats_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsFactory]:
    """Callable that starts extra NATS servers, all stopped at session end."""
    factory = NatsFactory(tmp_path_factory.mktemp("nats"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def nats_server(nats_factory: NatsFactory) -> NatsServer:
    """One JetStream-enabled NATS server for the whole session."""
    return nats_factory("timebank-test")


@pytest.fixture
def server_tmp_path() -> Iterator[Path]:
    """A temp dir (removed afterwards) that a server running as the `postgres` user can use."""
    path = server_tempdir("timebank-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _find_chromium() -> str | None:
    found = shutil.which("chromium")
    if found is None and Path("/usr/bin/chromium").is_file():
        found = "/usr/bin/chromium"
    return found


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of Debian's chromium. Missing, the browser tests fail saying how to install it (they never skip)."""
    found = _find_chromium()
    if found is None:
        pytest.fail(
            "the browser tests need Debian's chromium, which is not installed; run `tests/setup-browser` "
            "(as root it runs `apt-get update && apt-get install -y chromium`)",
            pytrace=False,
        )
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (its own browser downloads are not used)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[test]'", pytrace=False)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_executable, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            await launched.close()
