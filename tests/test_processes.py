"""Tests for the private PostgreSQL and NATS server processes and their fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import nats
from nats.js.api import StreamConfig

from services.node.nats import NatsServer
from services.node.postgres import PostgresServer
from services.node.processes import free_port
from services.node.testing import NatsFactory


async def test_postgres_accepts_connections(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()


async def test_postgres_creates_separate_databases(postgres_server: PostgresServer) -> None:
    for name in ("tp_first", "tp_second"):
        postgres_server.create_database(name)
    first = await asyncpg.connect(postgres_server.dsn("tp_first"))
    second = await asyncpg.connect(postgres_server.dsn("tp_second"))
    try:
        await first.execute("CREATE TABLE only_here (id int)")
        assert await first.fetchval("SELECT current_database()") == "tp_first"
        assert await second.fetchval("SELECT current_database()") == "tp_second"
        assert await second.fetchval("SELECT to_regclass('only_here') IS NULL")
    finally:
        await first.close()
        await second.close()
    for name in ("tp_first", "tp_second"):
        postgres_server.drop_database(name)


async def test_postgres_restart_keeps_data(server_tmp_path: Path) -> None:
    data_dir = server_tmp_path / "pgdata"
    with PostgresServer(data_dir) as server:
        conn = await asyncpg.connect(server.dsn())
        try:
            assert await conn.fetchval("SHOW fsync") == "on"
            await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1), (2), (3)")
        finally:
            await conn.close()
    assert not server.running
    server.stop()  # idempotent

    with PostgresServer(data_dir, free_port()) as again:
        conn = await asyncpg.connect(again.dsn())
        try:
            assert await conn.fetchval("SELECT sum(n) FROM kept") == 6
        finally:
            await conn.close()


async def test_nats_jetstream_drops_duplicate_msg_id(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="DEDUP", subjects=["dedup.>"]))
        first = await js.publish("dedup.one", b"hello", headers={"Nats-Msg-Id": "msg-1"})
        second = await js.publish("dedup.one", b"hello", headers={"Nats-Msg-Id": "msg-1"})
        assert not first.duplicate
        assert second.duplicate
        info = await js.stream_info("DEDUP")
        assert info.state.messages == 1
        await js.delete_stream("DEDUP")
    finally:
        await nc.close()


async def test_nats_factory_links_leafnodes(nats_factory: NatsFactory) -> None:
    hub = nats_factory("hub", leafnode_port=0, jetstream_domain="hub")
    leaf = nats_factory("leaf", leafnode_remotes=[hub.leafnode_url], jetstream_domain="leaf")
    hub.wait_for_leafnodes(1)
    nc_hub = await nats.connect(hub.url)
    nc_leaf = await nats.connect(leaf.url)
    try:
        sub = await nc_hub.subscribe("across")
        await nc_hub.flush()
        received = None
        for _ in range(50):  # interest propagates to the leaf asynchronously
            await nc_leaf.publish("across", b"over the leafnode")
            await nc_leaf.flush()
            try:
                received = await sub.next_msg(timeout=0.1)
                break
            except nats.errors.TimeoutError:
                continue
        assert received is not None
        assert received.data == b"over the leafnode"
        account = await nc_leaf.jetstream().account_info()
        assert account.domain == "leaf"
    finally:
        await nc_hub.close()
        await nc_leaf.close()


def test_browser_tests_fail_saying_how_to_install_chromium_and_never_install_it(tmp_path: Path) -> None:
    # A session of its own where chromium cannot be found, and where any apt-get run would leave a mark.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "apt-get-ran"
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (bin_dir / "apt-get").chmod(0o755)
    (tmp_path / "conftest.py").write_text(
        "import services.node.testing as plugin\n\nplugin._find_chromium = lambda: None\n"
    )
    (tmp_path / "test_page.py").write_text("def test_page(chromium_executable):\n    pass\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "services.node.testing",
            "-p",
            "no:cacheprovider",
            "-rA",
            "test_page.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "1 error" in output, output
    assert "skipped" not in output, output
    assert "tests/setup-browser" in output, output
    assert "apt-get update && apt-get install -y chromium" in output, output
    assert not marker.exists()
