"""Real `timebank serve` processes for tests that need the ledger as users and operators run it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from services.node.postgres import PostgresServer
from services.node.processes import free_port, server_tempdir
from shared.note import Signer, write_signer_key
from tests.ledger.conftest import ORIGIN, ledger_settings


def write_config(
    workdir: Path, database_url: str, key_file: Path, port: int, extra: dict[str, Any] | None = None
) -> Path:
    config: dict[str, Any] = {
        "origin": ORIGIN,
        "key_file": str(key_file),
        "database": {"url": database_url},
        "http": {"port": port},
        "ledger": {"tokens": msgspec.to_builtins(ledger_settings().ledger.tokens)},
        **(extra or {}),
    }
    path = workdir / f"node-{port}.toml"
    path.write_bytes(msgspec.toml.encode(config))
    return path


@contextmanager
def serve(
    workdir: Path, database_url: str, key_file: Path, *, only: str = "ledger", extra: dict[str, Any] | None = None
) -> Iterator[str]:
    """Run `timebank serve --only <only>` on the database until the block ends; yields its base URL once it is
    ready. ``extra`` adds configuration sections (e.g. ``exchange`` for the exchange's ledger address and token)."""
    port = free_port()
    config = write_config(workdir, database_url, key_file, port, extra)
    log = (workdir / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.node.cli", "--config", str(config), "serve", "--only", only],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the {only} server exited: {(workdir / f'serve-{port}.log').read_text()}")
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the {only} server did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        # Whatever the server logged (tracebacks included) shows in the report of a failing test.
        sys.stderr.write((workdir / f"serve-{port}.log").read_text())


@contextmanager
def ledger_on_own_database(postgres_server: PostgresServer, name: str, signer: Signer | None = None) -> Iterator[str]:
    """A `timebank serve --only ledger` process on a fresh database (``name`` prefixes it and its work directory),
    signing with ``signer`` (default: a fresh network key); yields its base URL, then drops the database and the
    directory."""
    workdir = server_tempdir(f"timebank-test-{name}-")
    database = f"{name}_{secrets.token_hex(4)}"
    postgres_server.create_database(database)
    try:
        write_signer_key(workdir / "network.key", signer or Signer.generate(ORIGIN))
        with serve(workdir, postgres_server.dsn(database), workdir / "network.key") as url:
            yield url
    finally:
        postgres_server.drop_database(database)
        shutil.rmtree(workdir, ignore_errors=True)
