"""`timebank up` as a newcomer meets it (issue 14): what it prints, a second start in the same folder, the verifier
key of a running node, the first coordinator's sign-in link, and supervision of its private servers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.node.processes import free_port
from shared.note import read_signer_key
from tests.node.running import Up


def _timebank(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    return subprocess.run(
        [sys.executable, "-m", "services.node.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def _ready(base: str) -> int:
    try:
        return httpx.get(base + "/ready", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _wait_ready_again(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _ready(base) != 200:
        assert time.monotonic() < deadline, "the node did not answer again"
        time.sleep(0.2)


def test_up_prints_name_keys_tokens_and_a_link_that_makes_the_first_coordinator(server_tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = Up(server_tmp_path, "--name", "timebank.test/riverside", "--port", str(port), "--data-dir", "node")
    try:
        link = up.wait_for(r"(http://\S+/join/(\S+))")
        out = up.output
        # Progress while it starts, then the network's name and verifier key as its key file holds them.
        assert "starting PostgreSQL" in out
        assert "starting NATS" in out
        assert f"network riverside (origin timebank.test/riverside) is up at {base}" in out
        verifier = read_signer_key(server_tmp_path / "node" / "network.key").verifier().to_text()
        assert f"verifier key: {verifier}" in out
        # Every token it wrote, each with what it is for.
        tokens = (server_tmp_path / "node" / "tokens.json").read_text()
        for role in ("coordinator", "auditor", "service", "federation"):
            token = re.search(rf'"{role}": "([^"]+)"', tokens)
            assert token is not None
            shown = re.search(rf"^  {role} +{re.escape(token[1])}\n +\S.+$", out, re.MULTILINE)
            assert shown, (role, out)
        # A healthy start is quiet: no warnings or errors on a fresh node.
        assert not re.search(r"warning|error|traceback", out, re.IGNORECASE), out

        # The link makes its visitor the first coordinator, signed in.
        assert httpx.get(link[1]).status_code == 200
        person = {
            "name": "Cora",
            "email": "cora@example.org",
            "password": "a long passphrase",
            "skills": [],
            "area": "",
        }
        joined = httpx.post(base + "/api/invitations/join", json={**person, "token": link[2]})
        assert joined.status_code == 201, joined.text
        session = httpx.post(base + "/api/sessions", json={"email": person["email"], "password": person["password"]})
        me = httpx.get(base + "/api/me", headers={"Authorization": f"Bearer {session.json()['token']}"}).json()
        assert (me["role"], me["status"]) == ("coordinator", "approved")
        # Used once only.
        again = httpx.post(
            base + "/api/invitations/join", json={**person, "email": "eve@example.org", "token": link[2]}
        )
        assert again.status_code >= 400

        # The verifier key of the running node, from the command line.
        key = _timebank(server_tmp_path, "key", "--data-dir", "node")
        assert key.returncode == 0, key.stderr
        assert key.stdout.splitlines()[0] == f"verifier key: {verifier}"

        # A second node in the same folder: one line naming the first, no traceback.
        second = _timebank(server_tmp_path, "up", "--data-dir", "node", "--port", str(free_port()))
        assert second.returncode != 0
        assert second.stdout == ""
        assert second.stderr.strip().splitlines() == [
            f"timebank: a node is already running in {server_tmp_path / 'node'} (pid {up.proc.pid}, {base})"
        ]
    finally:
        code = up.stop()
    assert code == 0, up.output

    # Started again, with a coordinator in place: no new link; the name is the key's, without --name.
    up = Up(server_tmp_path, "--port", str(port), "--data-dir", "node")
    try:
        up.wait_for("Ctrl-C stops the node")
        assert "network riverside (origin timebank.test/riverside)" in up.output
        assert "/join/" not in up.output
    finally:
        up.stop()


def test_up_restarts_its_postgresql_and_nats_when_they_die(server_tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = Up(server_tmp_path, "--port", str(port), "--data-dir", "node")
    try:
        up.wait_for("Ctrl-C stops the node")
        data = server_tmp_path / "node"
        os.kill(int((data / "postgres" / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        up.wait_for(r"PostgreSQL stopped unexpectedly \(exit code -9\); restarting it")
        up.wait_for("PostgreSQL is running again")
        _wait_ready_again(base)
        os.kill(int((data / "nats" / "nats-server.pid").read_text().split()[0]), signal.SIGKILL)
        up.wait_for(r"NATS stopped unexpectedly \(exit code -9\); restarting it")
        up.wait_for("NATS is running again")
        _wait_ready_again(base)
    finally:
        code = up.stop()
    assert code == 0, up.output


def test_up_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _timebank(tmp_path, "up", "--data-dir", "node", "--port", str(port))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"timebank: cannot serve on 127.0.0.1:{port} (Address already in use); choose another port with --port"
    ]
    assert not (tmp_path / "node" / "postgres").exists()  # nothing was started
