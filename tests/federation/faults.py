"""What the fault tests need beyond tests/federation/support.py: nodes served on real sockets (so the auditor can
read them), a TCP proxy that cuts a link, batches injected into a network's log stream, and the checks every
fault test ends with (each transfer decided once, minutes in flight, both logs audited with pairing)."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import nats

from services.federation import names, wire
from services.federation.publisher import split
from services.ledger.client import LedgerClient
from services.ledger.entries import CrossnetAccepted, CrossnetRejected, Transfer, entry_decoder
from services.node.cli import main
from services.node.processes import LOCALHOST, free_port
from tests.federation.support import LOCAL_USER, TOKENS, Network, auth, eventually

# No such member in any network.
NOBODY = "acct_" + "0" * 20


class Proxy:
    """A TCP proxy on loopback in front of ``upstream`` (host, port): a link that a test can cut and restore.

    Cutting closes every connection through it and refuses new ones, as a network partition would."""

    def __init__(self, upstream_url: str) -> None:
        host, _, port = upstream_url.removeprefix("nats://").rpartition(":")
        self._upstream = (host, int(port))
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    async def __aenter__(self) -> Proxy:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()

    async def open(self) -> None:
        """Accept connections (again, on the same port)."""
        self._server = await asyncio.start_server(self._relay, LOCALHOST, self.port, reuse_address=True)

    async def cut(self) -> None:
        """Refuse new connections and drop the ones open."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True)
        self._writers -= {writer, up_writer}
        for w in (writer, up_writer):
            w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


# ---- what the logs say ---------------------------------------------------------------------------------------


async def entries(net: Network) -> list[bytes]:
    """Every entry of the network's own log, as stored."""
    assert net.client is not None
    size = await net.log_size()
    out: list[bytes] = []
    while len(out) < size:
        r = await net.client.get("/ledger/log/entries", params={"start": len(out), "end": size})
        assert r.status_code == 200, r.text
        out.extend(base64.b64decode(e["data"]) for e in r.json()["entries"])
    return out


async def copy_of(net: Network, origin: str) -> tuple[int, list[bytes]]:
    """The size of ``net``'s verified copy of ``origin``'s log, and its entries."""
    assert net.client is not None
    size = next(p["replicated_size"] for p in (await net.status())["peers"] if p["origin"] == origin)
    out: list[bytes] = []
    while len(out) < size:
        r = await net.client.get(f"/federation/peers/{origin}/log/entries", params={"start": len(out), "end": size})
        assert r.status_code == 200, r.text
        out.extend(base64.b64decode(e["data"]) for e in r.json()["entries"])
    return size, out


async def decisions(net: Network, origin: str) -> list[str]:
    """The transfers of ``origin`` that ``net``'s log decided (accepted or rejected), once per decision entry."""
    decided = []
    for data in await entries(net):
        entry = entry_decoder.decode(data)
        if isinstance(entry, Transfer) and entry.remote is not None and entry.remote.origin == origin:
            if entry.remote.transfer is not None:
                decided.append(entry.remote.transfer)
        elif isinstance(entry, CrossnetRejected) and entry.origin == origin:
            decided.append(entry.transfer)
    return decided


async def acceptances(net: Network, origin: str) -> tuple[list[str], list[str]]:
    """The transfers of ``origin`` that ``net``'s log accepted, and the transfers of ``net`` whose acceptance by
    ``origin`` its log records, once per entry."""
    accepted, recorded = [], []
    for data in await entries(net):
        entry = entry_decoder.decode(data)
        if isinstance(entry, Transfer) and entry.remote is not None and entry.remote.origin == origin:
            if entry.remote.transfer is not None:
                accepted.append(entry.remote.transfer)
        elif isinstance(entry, CrossnetAccepted) and entry.origin == origin:
            recorded.append(entry.transfer)
    return accepted, recorded


async def reversals(net: Network) -> list[str]:
    """The transfers that ``net``'s log reverses, once per reversing entry."""
    found = []
    for data in await entries(net):
        entry = entry_decoder.decode(data)
        if isinstance(entry, Transfer) and entry.reverses is not None:
            found.append(entry.reverses)
    return found


async def in_flight(a: Network, b: Network) -> int:
    """balance_A(peer:B) + balance_B(peer:A): the minutes paid on one side and not yet settled on the other."""
    return await a.balance(await a.clearing_account(b.origin)) + await b.balance(await b.clearing_account(a.origin))


async def settled(a: Network, b: Network, sent_by_a: set[str], sent_by_b: set[str]) -> None:
    """Wait until every transfer each side sent the other is decided there, and each acceptance is recorded by the
    payer, then check each was decided and recorded once and nothing is left in flight."""

    async def all_decided() -> bool:
        return sent_by_a <= set(await decisions(b, a.origin)) and sent_by_b <= set(await decisions(a, b.origin))

    await eventually(all_decided, f"{a.name} and {b.name} decide each other's transfers", within=120)

    async def quiet() -> bool:
        return await in_flight(a, b) == 0

    await eventually(quiet, f"nothing is in flight between {a.name} and {b.name}", within=60)

    async def all_recorded() -> bool:
        for payer, payee in ((a, b), (b, a)):
            accepted, _ = await acceptances(payee, payer.origin)
            _, recorded = await acceptances(payer, payee.origin)
            if set(accepted) != set(recorded):
                return False
        return True

    await eventually(all_recorded, f"{a.name} and {b.name} record each other's acceptances", within=60)
    for payer, payee in ((a, b), (b, a)):
        _, recorded = await acceptances(payer, payee.origin)
        assert sorted(recorded) == sorted(set(recorded)), f"{payer.name} recorded an acceptance twice"
    for decider, sender, sent in ((b, a, sent_by_a), (a, b, sent_by_b)):
        decided = await decisions(decider, sender.origin)
        assert sorted(decided) == sorted(set(decided)), f"{decider.name} decided a transfer of {sender.name} twice"
        assert set(decided) == sent, f"{decider.name} decided transfers {sender.name} never sent"


async def pay_through(net: Network, key: str, payer: str, clearing: str, payee: str, minutes: int) -> str:
    """Pay ``payee`` in a neighbour through its clearing account ``clearing`` (with or without the federation)."""
    assert net.client is not None
    body = {"key": key, "payer": payer, "payee": clearing, "minutes": minutes, "remote_payee": payee}
    r = await net.client.post("/ledger/transfers", json=body, headers=auth("service"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def copy_size(net: Network, origin: str) -> int:
    """How many entries of ``origin``'s log ``net`` holds verified."""
    return int(next(p["replicated_size"] for p in (await net.status())["peers"] if p["origin"] == origin))


async def rejected(net: Network, origin: str) -> dict[str, int]:
    """What ``net`` refused of ``origin``'s messages: counts by reason."""
    peer = next(p for p in (await net.status())["peers"] if p["origin"] == origin)
    return {r["reason"]: r["count"] for r in peer["rejected"]}


def linked(*nets: Network) -> None:
    """Make every network a neighbour of every other."""
    for net in nets:
        net.peers = [other.as_peer(net) for other in nets if other is not net]


# ---- the auditor ---------------------------------------------------------------------------------------------


async def audit_pair(a: Network, b: Network) -> dict[str, Any]:
    """``timebank audit`` of A's ledger with ``--neighbour`` B's, over HTTP; the JSON report (its exit status must
    say pass). The command runs its own event loop, so it runs in a thread while this loop serves both nodes."""
    assert a.url is not None
    assert b.url is not None
    with tempfile.TemporaryDirectory(prefix="timebank-fault-audit-") as tmp:
        report = Path(tmp) / "report.json"
        args = [
            "audit", f"{a.url}/ledger", "--vkey", a.signer.verifier().to_text(),
            "--neighbour", f"{b.url}/ledger", "--neighbour-vkey", b.signer.verifier().to_text(),
            "--no-state", "--no-cache", "--jobs", "1", "--quiet", "--json", str(report),
        ]  # fmt: skip
        status = await asyncio.to_thread(main, args)
        done: dict[str, Any] = json.loads(report.read_bytes())
    assert status == 0, json.dumps(done, indent=1)[:4000]
    assert done["ok"] is True
    assert done["neighbour"]["ok"] is True
    [pairing] = [c for c in done["checks"] if c["id"] == "federation.pairing"]
    assert pairing["status"] == "pass", pairing
    return done


def pairing_detail(report: dict[str, Any]) -> str:
    [pairing] = [c for c in report["checks"] if c["id"] == "federation.pairing"]
    return str(pairing["detail"])


# ---- batches on a network's log stream -----------------------------------------------------------------------


async def batches(net: Network, after: int = 0) -> list[wire.LogBatch]:
    """The batches the publisher would send for the network's log from ``after`` (a size one of its checkpoints
    signed), checkpoint by checkpoint, built from the ledger's public log."""
    assert net.url is not None
    out: list[wire.LogBatch] = []
    async with LedgerClient(f"{net.url}/ledger", TOKENS["auditor"]) as ledger:
        at = after
        while checkpoints := await ledger.checkpoints(at, 100):
            for checkpoint in checkpoints:
                page = await ledger.entries(at, checkpoint.size)
                data = [e.data for e in page.entries]
                assert len(data) == checkpoint.size - at, "the test reads at most 1000 entries per checkpoint"
                out.extend(split(at, data, checkpoint.note.encode(), net.origin))
                at = checkpoint.size
    return out


async def inject(net: Network, sent: list[wire.LogBatch], tag: str) -> None:
    """Publish ``sent`` into the network's own log stream, in the order given, with its own services' NATS
    credential. Each gets a message id of its own (``tag``, its position), so JetStream stores copies too."""
    nc = await nats.connect(servers=[net.nats.url], user=LOCAL_USER, password=net.nats_password)
    try:
        js = nc.jetstream(domain=net.name)
        for n, batch in enumerate(sent):
            headers = {"Nats-Msg-Id": f"{tag}-{n}-{wire.message_id(batch)}"}
            await js.publish(names.log_subject(net.name), wire.encoder.encode(batch), headers=headers)
    finally:
        await nc.close()
