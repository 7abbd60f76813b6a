"""A network's node as its own `timebank serve` process (ledger, federation and exchange), which a test can kill
with SIGKILL and start again on the same port, database, keys and NATS server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec

from services.node.processes import LOCALHOST, free_port
from shared.note import write_signer_key
from shared.settings import DatabaseSettings, ExchangeSettings, HttpSettings, LogSettings
from tests.federation.support import TOKENS, Network, auth, eventually


def _without_none(value: Any) -> Any:
    """Settings as TOML can hold them: TOML has no null, and a missing key means the default."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class NodeProcess:
    """One network's `timebank serve`, configured from ``Network.settings()``, its files under ``workdir``."""

    def __init__(self, net: Network, workdir: Path) -> None:
        self.net = net
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.log_path = workdir / f"{net.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        write_signer_key(workdir / f"{net.name}.key", net.signer)
        write_signer_key(workdir / f"{net.name}-witness.key", net.witness)
        base = net.settings()
        settings = msgspec.structs.replace(
            base,
            data_dir=str(workdir),
            key_file=str(workdir / f"{net.name}.key"),
            database=DatabaseSettings(url=net.database_url, max_pool=10),
            http=HttpSettings(host=LOCALHOST, port=self.port),
            exchange=ExchangeSettings(ledger_token=TOKENS["service"]),
            federation=msgspec.structs.replace(
                base.federation, witness_key_file=str(workdir / f"{net.name}-witness.key")
            ),
            log=LogSettings(format="json", level="warning"),
        )
        self.config = workdir / f"{net.name}.toml"
        self.config.write_bytes(msgspec.toml.encode(_without_none(msgspec.to_builtins(settings))))

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "services.node.cli", "--config", str(self.config), "serve"],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, whatever was in flight is lost mid-way."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=30)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    async def ready(self) -> None:
        """Wait until its ledger and its federation answer."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5, trust_env=False) as client:

            async def answers() -> bool:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise AssertionError(f"{self.net.name}'s node exited: {self.log_path.read_text()[-4000:]}")
                try:
                    ledger = await client.get("/ledger/ready")
                    federation = await client.get("/federation/status", headers=auth("auditor"))
                except httpx.TransportError:
                    return False
                return ledger.status_code == 200 and federation.status_code == 200

            await eventually(answers, f"{self.net.name}'s node serves", within=90)


@asynccontextmanager
async def node_processes(workdir: Path, *nets: Network) -> AsyncIterator[list[NodeProcess]]:
    """Start every network's node as its own process; meanwhile each ``net.client`` and ``net.url`` reach it
    (across restarts, since the port stays). Whatever the nodes logged shows in a failing test's report."""
    nodes = [NodeProcess(net, workdir) for net in nets]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            await node.ready()
        for node in nodes:
            node.net.url = node.url
            node.net.client = httpx.AsyncClient(base_url=node.url, timeout=30, trust_env=False)
        try:
            yield nodes
        finally:
            for node in nodes:
                if node.net.client is not None:
                    await node.net.client.aclose()
                node.net.client = None
                node.net.url = None
    finally:
        for node in nodes:
            node.stop()
        for node in nodes:
            if node.log_path.exists():
                sys.stderr.write(node.log_path.read_text()[-20000:])
