"""Auditing a federated node with witnesses: the ledger serves its checkpoint with the cosignatures its federation
collected, and `timebank audit --witness <vkey> --min-cosignatures N` counts them, over HTTP, as an auditor would."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from services.node.cli import main
from shared.logverify import check_cosignatures
from shared.note import CosignatureSigner
from tests.federation.faults import linked
from tests.federation.support import Network, eventually, served


async def _audit(net: Network, *args: str) -> tuple[int, dict[str, Any] | None]:
    """``timebank audit`` of the network's ledger with ``args``: its exit status and JSON report (None if it
    refused its arguments). The command runs its own event loop, so it runs in a thread while this loop serves."""
    assert net.url is not None
    with tempfile.TemporaryDirectory(prefix="timebank-witness-audit-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            "audit", f"{net.url}/ledger", "--vkey", net.signer.verifier().to_text(), *args,
            "--no-state", "--no-cache", "--jobs", "1", "--quiet", "--json", str(report),
        ]  # fmt: skip
        status = await asyncio.to_thread(main, command)
        return status, json.loads(report.read_bytes()) if report.exists() else None


def _witnesses(report: dict[str, Any]) -> dict[str, Any]:
    [check] = [c for c in report["checks"] if c["id"] == "checkpoint.witnesses"]
    return check


async def test_the_audit_counts_the_neighbours_cosignature_on_the_served_checkpoint(
    two_networks: tuple[Network, Network],
) -> None:
    riverside, hillside = two_networks
    linked(riverside, hillside)
    hillside_key = hillside.witness.verifier().to_text()
    # A witness that never saw riverside's log.
    stranger_key = CosignatureSigner.generate("witness.test/stranger").verifier().to_text()
    async with served(riverside), served(hillside):
        await riverside.transfers(8, "witnessed")
        size = await riverside.log_size()

        async def cosigned() -> bool:
            assert riverside.client is not None
            note = (await riverside.client.get("/ledger/log/checkpoint")).content
            served_size = int(note.split(b"\n")[1])
            return served_size >= size and check_cosignatures(note, [hillside.witness.verifier()]).meets(1)

        await eventually(cosigned, "riverside serves its checkpoint with hillside's cosignature", within=60)

        status, report = await _audit(riverside, "--witness", hillside_key, "--min-cosignatures", "1")
        assert report is not None
        assert status == 0, json.dumps(report, indent=1)[:4000]
        assert report["ok"] is True
        witnesses = _witnesses(report)
        assert witnesses["status"] == "pass"
        assert witnesses["detail"].startswith(f"1 of 1 witnesses cosigned ({hillside.witness.name} at ")

        # Two cosignatures asked for: hillside's is the only one, so the audit fails and says whose is missing.
        status, report = await _audit(
            riverside, "--witness", hillside_key, "--witness", stranger_key, "--min-cosignatures", "2"
        )
        assert report is not None
        assert status == 1, json.dumps(report, indent=1)[:4000]
        assert report["ok"] is False
        witnesses = _witnesses(report)
        assert witnesses["status"] == "fail"
        assert [f["message"] for f in witnesses["failures"]] == [
            "1 valid cosignature(s) of the 2 required; none from witness.test/stranger"
        ]
        assert {c["id"] for c in report["checks"] if c["status"] == "fail"} == {"checkpoint.witnesses"}

        # Two asked of hillside's key alone can never be met: the auditor refuses the arguments.
        status, report = await _audit(riverside, "--witness", hillside_key, "--min-cosignatures", "2")
        assert (status, report) == (2, None)
