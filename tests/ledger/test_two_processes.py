"""Two `timebank serve` processes on one database: the writer lock lives in PostgreSQL, so both stay correct."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx

from shared import merkle
from shared.note import Signer, open_note, parse_checkpoint, write_signer_key
from tests.ledger.conftest import ORIGIN, auth
from tests.ledger.processes import serve


async def test_two_processes_spending_from_one_account_never_cross_its_floor_and_keep_one_log(
    database_url: str, server_tmp_path: Path
) -> None:
    signer = Signer.generate(ORIGIN)
    write_signer_key(server_tmp_path / "network.key", signer)
    with (
        serve(server_tmp_path, database_url, server_tmp_path / "network.key") as one,
        serve(server_tmp_path, database_url, server_tmp_path / "network.key") as two,
    ):
        async with httpx.AsyncClient(headers=auth("coordinator"), timeout=30) as http:
            payer = (await http.post(one + "/accounts", json={"key": "payer", "floor": -600})).json()["id"]
            payees = [(await http.post(two + "/accounts", json={"key": f"payee-{i}"})).json()["id"] for i in range(8)]

            async def spend(i: int) -> int:
                body = {"key": f"spend-{i}", "payer": payer, "payee": payees[i % 8], "minutes": 30}
                r = await http.post((one, two)[i % 2] + "/transfers", json=body)
                return r.status_code

            statuses = await asyncio.gather(*(spend(i) for i in range(60)))
            assert statuses.count(201) == 20  # -600 / 30
            assert statuses.count(409) == 40
            for base in (one, two):
                assert (await http.get(f"{base}/accounts/{payer}")).json()["balance"] == -600
            balances = (await http.get(two + "/log/balances", headers=auth("auditor"))).json()
            assert sum(a["balance"] for a in balances["accounts"]) == 0

            # One gap-free log, whichever process wrote each entry, under one signed checkpoint.
            note = (await http.get(two + "/log/checkpoint")).content
            checkpoint = parse_checkpoint(open_note(note, [signer.verifier()]).text)
            assert checkpoint.size == 1 + 8 + 20
            entries = (await http.get(one + "/log/entries", params={"start": 0})).json()["entries"]
            assert [e["index"] for e in entries] == list(range(checkpoint.size))
            leaves = [merkle.leaf_hash(base64.b64decode(e["data"])) for e in entries]
            assert merkle.root(leaves) == checkpoint.root_hash
