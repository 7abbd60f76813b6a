"""`timebank keygen` and `timebank migrate`, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from shared.note import Verifier, read_signer_key


def timebank(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.node.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_keygen_writes_a_private_key_file_once_and_prints_its_verifier(tmp_path: Path) -> None:
    key = tmp_path / "network.key"
    done = timebank("keygen", "--name", "timebank.example/riverside", "--out", str(key))
    assert done.returncode == 0, done.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    signer = read_signer_key(key)
    assert signer.name == "timebank.example/riverside"
    printed = done.stdout.split("verifier key: ")[1].strip()
    assert Verifier.from_text(printed).public_key == signer.public_key

    again = timebank("keygen", "--name", "timebank.example/riverside", "--out", str(key))
    assert again.returncode != 0
    assert "`timebank key` prints its verifier" in again.stderr
    assert read_signer_key(key).public_key == signer.public_key  # never overwritten


async def test_migrate_applies_the_schema_once(database_url: str) -> None:
    first = timebank("migrate", env={"TIMEBANK_DATABASE__URL": database_url})
    assert first.returncode == 0, first.stderr
    assert "0001_ledger.sql" in first.stdout
    second = timebank("migrate", env={"TIMEBANK_DATABASE__URL": database_url})
    assert "nothing (up to date)" in second.stdout
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT size FROM ledger.head") == 0
    finally:
        await conn.close()


def test_serve_without_a_database_url_says_how_to_configure_it() -> None:
    done = timebank("serve", env={"TIMEBANK_DATABASE__URL": ""})
    assert done.returncode != 0
    assert "database.url" in done.stderr


def test_key_prints_the_verifier_keys_of_a_nodes_folder_or_says_there_is_none(tmp_path: Path) -> None:
    missing = timebank("key", "--data-dir", str(tmp_path / "nothing"))
    assert missing.returncode != 0
    assert (
        missing.stderr.strip()
        == f"timebank: no signing key at {tmp_path / 'nothing' / 'network.key'}; `timebank up` makes one"
    )
    made = timebank("keygen", "--name", "timebank.example/riverside", "--out", str(tmp_path / "node" / "network.key"))
    assert made.returncode == 0, made.stderr
    shown = timebank("key", "--data-dir", str(tmp_path / "node"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == made.stdout.splitlines()[1] + "\n"  # the verifier line keygen printed; no witness key yet
