"""`timebank up`: the embedded node starts its own PostgreSQL and NATS, serves, stops cleanly and keeps its data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.node.processes import free_port
from shared.note import Signer


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TIMEBANK_DATA_DIR": str(data_dir),
        "TIMEBANK_HTTP__PORT": str(port),
        "TIMEBANK_ORIGIN": "timebank.test/up",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.node.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str], base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"timebank up exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("timebank up did not become ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    return out


def _wait_outbox_empty(base: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(base + "/ready").json()["outbox_pending"]:
        assert time.monotonic() < deadline, "the exchange's outbox did not empty"
        time.sleep(0.1)


def _timebank(data_dir: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIMEBANK_DATA_DIR": str(data_dir), "TIMEBANK_HTTP__PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "services.node.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _peer_commands_manage_a_neighbour(data_dir: Path, port: int) -> None:
    """`timebank peer add|list|remove` against the running node, with the coordinator token it made."""
    neighbour = Signer.generate("timebank.test/hillside").verifier().to_text()
    added = _timebank(
        data_dir, port, "peer", "add", "--origin", "timebank.test/hillside", "--log-key", neighbour,
        "--nats-url", "nats://127.0.0.1:1", "--trust-limit", "120",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "user:     peer-hillside" in added.stdout
    password = added.stdout.split("password: ")[1].split()[0]
    # The node let the neighbour's user in to its NATS server's configuration.
    assert password in (data_dir / "nats" / "authorization.conf").read_text()
    listed = _timebank(data_dir, port, "peer", "list")
    assert "timebank.test/hillside  (NATS name hillside, trust limit 120 minutes)" in listed.stdout, listed.stderr
    removed = _timebank(data_dir, port, "peer", "remove", "timebank.test/hillside")
    assert removed.returncode == 0, removed.stderr
    assert "peer-hillside" not in (data_dir / "nats" / "authorization.conf").read_text()
    assert _timebank(data_dir, port, "peer", "list").stdout.strip() == "no neighbours"
    refused = _timebank(data_dir, port, "peer", "add", "--origin", "x", "--log-key", "bad", "--nats-url", "n",
                        "--trust-limit", "1")  # fmt: skip
    assert refused.returncode != 0
    assert "422" in refused.stderr


def test_up_serves_stops_cleanly_and_keeps_its_data_across_restarts(server_tmp_path: Path) -> None:
    data_dir = server_tmp_path / "node"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    proc = _start(data_dir, port)
    try:
        _wait_ready(proc, base)
        tokens = json.loads((data_dir / "tokens.json").read_text())
        assert (data_dir / "network.key").stat().st_mode & 0o777 == 0o600
        assert (data_dir / "tokens.json").stat().st_mode & 0o777 == 0o600
        coordinator = {"Authorization": f"Bearer {tokens['coordinator']}"}
        alice = httpx.post(base + "/ledger/accounts", json={"key": "alice"}, headers=coordinator).json()["id"]
        bob = httpx.post(base + "/ledger/accounts", json={"key": "bob"}, headers=coordinator).json()["id"]
        r = httpx.post(
            base + "/ledger/transfers",
            json={"key": "lift-to-clinic", "payer": alice, "payee": bob, "minutes": 45},
            headers=coordinator,
        )
        assert r.status_code == 201, r.text
        _wait_outbox_empty(base)  # the exchange opens the community pot's account at start-up
        checkpoint = httpx.get(base + "/ledger/log/checkpoint").text
        origin, size = checkpoint.split("\n")[:2]
        assert origin == "timebank.test/up"
        assert int(size) == 4  # the pot, alice, bob and the transfer
        # The federation signs in to the node's own NATS server and publishes the log to its stream.
        deadline = time.monotonic() + 30
        while httpx.get(base + "/federation/status", headers=coordinator).json()["published_size"] < 4:
            assert time.monotonic() < deadline, "the federation did not publish the log to NATS"
            time.sleep(0.1)
        _peer_commands_manage_a_neighbour(data_dir, port)
        # Linking the neighbour opened its clearing account and set its floor: two more entries.
        deadline = time.monotonic() + 30
        while (checkpoint := httpx.get(base + "/ledger/log/checkpoint").text).split("\n")[1] != "6":
            assert time.monotonic() < deadline, checkpoint
            time.sleep(0.1)
    finally:
        out = _stop(proc) if proc.poll() is None else ""
    assert "stopping" in out

    proc = _start(data_dir, port)
    try:
        _wait_ready(proc, base)
        r = httpx.get(base + f"/ledger/accounts/{bob}", headers=coordinator)
        assert r.json()["balance"] == 45
        assert httpx.get(base + "/ledger/log/checkpoint").text == checkpoint
    finally:
        _stop(proc)
