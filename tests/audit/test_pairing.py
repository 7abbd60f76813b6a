"""Auditing two federated networks together: cross-network transfers pair up across the two public logs.

Two real ledgers (riverside and hillside) trade in both directions, with the federation played by hand: each
receiver decides the sender's transfers, each sender reverses what was rejected. Both logs are exported, and the
audit of one with ``--neighbour`` the other must pass; every way an operator could make the two logs disagree
(a forged acceptance, an acceptance for other minutes, a dropped rejection, an accepted transfer reversed) must be
caught, named, and located in the right log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from services.ledger.entries import (
    AccountOpened,
    CrossnetAccepted,
    CrossnetRejected,
    Remote,
    Transfer,
    entry_decoder,
    entry_encoder,
    transfer_id,
)
from services.node.cli import main
from services.node.postgres import PostgresServer
from shared.note import Signer, write_signer_key
from tests.audit.support import Audit, audit, copy_export, edit_entry, read_entries, rewrite
from tests.ledger.conftest import ORIGIN, auth
from tests.ledger.processes import serve
from tests.ledger.support import relay

Capture = pytest.CaptureFixture[str]
ORIGIN_B = "timebank.test/hillside"


@dataclass
class Network:
    url: str
    signer: Signer
    export: Path
    accounts: dict[str, str]

    @property
    def vkey(self) -> str:
        return self.signer.verifier().to_text()


@dataclass
class Pair:
    a: Network  # riverside
    b: Network  # hillside
    sent: dict[str, str]  # A's cross-network transfers by name: ok, too_much, typo


async def trade(a_url: str, b_url: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Open accounts in both networks, pay across in both directions, and relay the decisions both ways."""
    async with (
        httpx.AsyncClient(base_url=a_url, headers=auth("coordinator"), timeout=60) as a,
        httpx.AsyncClient(base_url=b_url, headers=auth("coordinator"), timeout=60) as b,
    ):

        async def open_account(client: httpx.AsyncClient, key: str, **fields: object) -> str:
            r = await client.post("/accounts", json={"key": key, **fields})
            assert r.status_code in (200, 201), r.text
            return str(r.json()["id"])

        async def pay(client: httpx.AsyncClient, key: str, payer: str, payee: str, minutes: int, to: str) -> str:
            body = {"key": key, "payer": payer, "payee": payee, "minutes": minutes, "remote_payee": to}
            r = await client.post("/transfers", json=body)
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        in_a = {name: await open_account(a, name) for name in ("alice", "ann")}
        in_a["peer"] = await open_account(a, "peer-b", kind="peer", peer=ORIGIN_B, floor=-300)
        in_b = {name: await open_account(b, name) for name in ("bob", "bea")}
        in_b["peer"] = await open_account(b, "peer-a", kind="peer", peer=ORIGIN, floor=-40)  # B trusts A for 40

        # B's payments are decided (and their acceptance recorded in B's log) first, so that hillside's log ends
        # with its decisions on riverside's transfers, and B counts those 75 minutes as settled when deciding.
        await pay(b, "lift", in_b["bob"], in_b["peer"], 45, in_a["alice"])
        await pay(b, "soup", in_b["bea"], in_b["peer"], 30, in_a["ann"])
        sent = {
            "typo": await pay(a, "typo", in_a["ann"], in_a["peer"], 15, "acct_" + "9" * 20),
            "too_much": await pay(a, "too-much", in_a["alice"], in_a["peer"], 120, in_b["bob"]),
            "ok": await pay(a, "ok", in_a["alice"], in_a["peer"], 60, in_b["bob"]),
        }
        back = await relay(b, a, ORIGIN_B, ORIGIN)
        assert [d["decision"] for d in back] == ["accepted", "accepted"]
        there = await relay(a, b, ORIGIN, ORIGIN_B)
        assert [(d["decision"], d["reason"]) for d in there] == [
            ("rejected", "unknown_payee"),
            ("rejected", "trust_limit"),
            ("accepted", None),
        ]
        return in_a, in_b, sent


@pytest.fixture(scope="module")
def networks(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two served ledgers that traded with each other, each exported with `timebank export`."""
    work = tmp_path_factory.mktemp("pair")
    names = {ORIGIN: "pairing_riverside", ORIGIN_B: "pairing_hillside"}
    signers = {origin: Signer.generate(origin) for origin in names}
    for origin, name in names.items():
        postgres_server.drop_database(name)
        postgres_server.create_database(name)
        write_signer_key(work / f"{name}.key", signers[origin])
    try:
        with (
            serve(work, postgres_server.dsn(names[ORIGIN]), work / f"{names[ORIGIN]}.key") as a_url,
            serve(
                work, postgres_server.dsn(names[ORIGIN_B]), work / f"{names[ORIGIN_B]}.key", extra={"origin": ORIGIN_B}
            ) as b_url,
        ):
            in_a, in_b, sent = asyncio.run(trade(a_url, b_url))
            exports = {url: work / f"export-{n}" for n, url in enumerate((a_url, b_url))}
            for url, directory in exports.items():
                assert main(["export", url, str(directory), "--quiet"]) == 0
            yield Pair(
                Network(a_url, signers[ORIGIN], exports[a_url], in_a),
                Network(b_url, signers[ORIGIN_B], exports[b_url], in_b),
                sent,
            )
    finally:
        for name in names.values():
            postgres_server.drop_database(name)


def audit_pair(capsys: Capture, tmp: Path, a: Path | str, b: Path | str, pair: Pair, *extra: str) -> Audit:
    done = audit(
        capsys, tmp, str(a), "--vkey", pair.a.vkey, "--neighbour", str(b), "--neighbour-vkey", pair.b.vkey, *extra
    )
    return done


def pairing_failures(done: Audit) -> list[tuple[str | None, int | None, str]]:
    return [(f.get("log"), f.get("index"), f["message"]) for f in done.check("federation.pairing")["failures"]]


def test_two_settled_networks_pair_up_and_net_to_zero(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    done = audit_pair(capsys, tmp_path, networks.a.export, networks.b.export, networks)
    assert done.status == 0, done.out
    assert done.report["ok"] is True
    pairing = done.check("federation.pairing")
    assert pairing["status"] == "pass", done.out
    # 3 riverside -> hillside (1 accepted, 2 rejected and reversed), 2 hillside -> riverside (accepted).
    assert f"5 cross-network transfers paired; balance_{ORIGIN}(peer:{ORIGIN_B}) + " in pairing["detail"]
    assert pairing["detail"].endswith(" = 0")
    neighbour = done.report["neighbour"]
    assert neighbour["ok"] is True
    assert neighbour["origin"] == ORIGIN_B
    assert {c["status"] for c in neighbour["checks"]} == {"pass", "skip"}
    assert f"neighbour: audit of {networks.b.export}" in done.out


def test_the_live_nodes_pair_up_over_http(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    done = audit_pair(capsys, tmp_path, networks.a.url, networks.b.url, networks, "--no-cache")
    assert done.status == 0, done.out
    assert done.check("federation.pairing")["status"] == "pass"
    # The same pair seen from the other side.
    done = audit(
        capsys, tmp_path, networks.b.url, "--vkey", networks.b.vkey,
        "--neighbour", networks.a.url, "--neighbour-vkey", networks.a.vkey, "--no-cache",
    )  # fmt: skip
    assert done.status == 0, done.out
    assert done.check("federation.pairing")["status"] == "pass"


def test_a_neighbour_behind_leaves_transfers_in_flight_and_still_passes(
    networks: Pair, tmp_path: Path, capsys: Capture
) -> None:
    # Hillside's log at its previous size, signed by its key: it had not yet decided riverside's last transfer.
    b = copy_export(networks.b.export, tmp_path / "b")
    entries = read_entries(b)
    last = entry_decoder.decode(entries[-1])
    assert isinstance(last, Transfer)
    assert last.remote is not None
    assert last.remote.transfer == networks.sent["ok"]
    rewrite(b, networks.b.signer, entries[:-1])

    done = audit_pair(capsys, tmp_path, networks.a.export, b, networks)
    assert done.status == 0, done.out
    detail = done.check("federation.pairing")["detail"]
    assert detail.endswith(
        f" = 60 (1 of {ORIGIN}'s not yet decided by {ORIGIN_B}; 1 acceptances recorded by {ORIGIN} of entries "
        f"past {ORIGIN_B}'s checkpoint (audit again to check them))"
    ), detail


def test_a_forged_cross_network_acceptance_is_caught_in_the_neighbours_log(
    networks: Pair, tmp_path: Path, capsys: Capture
) -> None:
    # Hillside's operator pays bob out of the clearing account for riverside, citing a transfer riverside never
    # made, and signs the result with hillside's real key: hillside's own log still verifies.
    b = copy_export(networks.b.export, tmp_path / "b")
    entries = read_entries(b)
    forged = Transfer(
        at=datetime.now(UTC),
        id=transfer_id("forged"),
        payer=networks.b.accounts["peer"],
        payee=networks.b.accounts["bob"],
        minutes=50,
        remote=Remote(origin=ORIGIN, transfer=transfer_id("never-made"), index=7),
    )
    rewrite(b, networks.b.signer, [*entries, entry_encoder.encode(forged)])

    done = audit_pair(capsys, tmp_path, networks.a.export, b, networks)
    assert done.status == 1, done.out
    assert done.report["neighbour"]["ok"] is True, "hillside's own log is consistent; only the pairing is not"
    assert done.failed() == {"federation.pairing"}
    failures = pairing_failures(done)
    assert failures[0] == (
        ORIGIN_B,
        len(entries),
        f"accepts {ORIGIN}'s transfer {forged.remote.transfer} (entry 7), which {ORIGIN}'s log does not hold",
    )
    assert any("= -50 minutes, but the transfers still in flight account for 0" in m for _, _, m in failures)
    assert f"{ORIGIN_B} entry {len(entries)}: accepts" in done.out
    assert "FAIL: 1 check(s) failed: federation.pairing" in done.out


def test_an_acceptance_for_other_minutes_is_caught(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    b = copy_export(networks.b.export, tmp_path / "b")
    entries = read_entries(b)
    entries[-1] = edit_entry(entries[-1], minutes=90)  # riverside sent 60
    rewrite(b, networks.b.signer, entries)

    done = audit_pair(capsys, tmp_path, networks.a.export, b, networks)
    assert done.status == 1, done.out
    log, index, message = pairing_failures(done)[0]
    assert (log, index) == (ORIGIN_B, len(entries) - 1)
    assert message.startswith(f"accepts {ORIGIN}'s transfer {networks.sent['ok']} as entry ")
    assert "90 minutes to" in message
    assert ", 60 minutes to" in message


def test_a_dropped_rejection_is_caught_through_the_senders_reversal(
    networks: Pair, tmp_path: Path, capsys: Capture
) -> None:
    b = copy_export(networks.b.export, tmp_path / "b")
    entries = read_entries(b)
    kept = []
    for data in entries:
        entry = entry_decoder.decode(data)
        if not (isinstance(entry, CrossnetRejected) and entry.transfer == networks.sent["too_much"]):
            kept.append(data)
    assert len(kept) == len(entries) - 1
    rewrite(b, networks.b.signer, kept)

    done = audit_pair(capsys, tmp_path, networks.a.export, b, networks)
    assert done.status == 1, done.out
    # Dropping the entry also moved hillside's acceptance of "ok" back by one: riverside's record names the old
    # index, and that is caught too.
    [(log, index, message), (_, _, moved)] = pairing_failures(done)
    assert log == ORIGIN
    assert message == f"reverses transfer {networks.sent['too_much']}, which {ORIGIN_B} has not rejected"
    assert moved.startswith(f"records {ORIGIN_B}'s acceptance of transfer {networks.sent['ok']} as its entry ")
    reversal = entry_decoder.decode(read_entries(networks.a.export)[index or 0])
    assert isinstance(reversal, Transfer)
    assert reversal.reverses == networks.sent["too_much"]


def test_reversing_an_accepted_transfer_is_caught(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    # Riverside's operator takes back the 60 minutes hillside accepted, signed with riverside's real key.
    a = copy_export(networks.a.export, tmp_path / "a")
    entries = read_entries(a)
    undo = Transfer(
        at=datetime.now(UTC),
        id=transfer_id("take-back"),
        payer=networks.a.accounts["peer"],
        payee=networks.a.accounts["alice"],
        minutes=60,
        reverses=networks.sent["ok"],
    )
    rewrite(a, networks.a.signer, [*entries, entry_encoder.encode(undo)])

    done = audit_pair(capsys, tmp_path, a, networks.b.export, networks)
    assert done.status == 1, done.out
    assert done.check("ledger.reversals")["status"] == "pass", "as a reversal alone it is well formed"
    log, index, message = pairing_failures(done)[0]
    assert (log, index) == (ORIGIN, len(entries))
    assert message.startswith(f"reverses transfer {networks.sent['ok']}, which {ORIGIN_B} accepted (entry ")


def test_a_recorded_acceptance_the_neighbour_never_made_is_caught(
    networks: Pair, tmp_path: Path, capsys: Capture
) -> None:
    """Riverside's operator records hillside's acceptance of the transfer hillside rejected for the trust limit:
    riverside would then count those minutes as settled. Hillside's log shows the rejection."""
    a = copy_export(networks.a.export, tmp_path / "a")
    entries = read_entries(a)
    rejection = next(
        i
        for i, data in enumerate(read_entries(networks.b.export))
        if isinstance(e := entry_decoder.decode(data), CrossnetRejected) and e.transfer == networks.sent["too_much"]
    )
    forged = CrossnetAccepted(
        at=datetime.now(UTC), origin=ORIGIN_B, transfer=networks.sent["too_much"], index=rejection
    )
    rewrite(a, networks.a.signer, [*entries, entry_encoder.encode(forged)])

    done = audit_pair(capsys, tmp_path, a, networks.b.export, networks)
    assert done.status == 1, done.out
    assert done.report["ok"] is False
    assert pairing_failures(done) == [
        (
            ORIGIN,
            len(entries),
            f"records {ORIGIN_B}'s acceptance of transfer {networks.sent['too_much']} as its entry {rejection}; "
            f"{ORIGIN_B}'s log holds its rejection at entry {rejection}",
        )
    ]


def test_an_acceptance_the_payer_has_not_recorded_yet_is_pending(
    networks: Pair, tmp_path: Path, capsys: Capture
) -> None:
    a = copy_export(networks.a.export, tmp_path / "a")
    entries = read_entries(a)
    assert isinstance(entry_decoder.decode(entries[-1]), CrossnetAccepted)
    rewrite(a, networks.a.signer, entries[:-1])

    done = audit_pair(capsys, tmp_path, a, networks.b.export, networks)
    assert done.status == 0, done.out
    detail = done.check("federation.pairing")["detail"]
    assert detail.endswith(f" = 0 (1 accepted by {ORIGIN_B}, not yet recorded by {ORIGIN})"), detail


def test_auditing_a_log_against_itself_is_refused(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    done = audit(
        capsys, tmp_path, str(networks.a.export), "--vkey", networks.a.vkey,
        "--neighbour", str(networks.a.export), "--neighbour-vkey", networks.a.vkey,
    )  # fmt: skip
    assert done.status == 1, done.out
    assert pairing_failures(done) == [(None, None, f"both logs are {ORIGIN}'s: give the neighbour's log to pair with")]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--neighbour", "somewhere"], id="neighbour-without-its-key"),
        pytest.param(["--neighbour-vkey", "somewhere"], id="key-without-the-neighbour"),
        pytest.param(["--neighbour", "x", "--neighbour-vkey", "y", "--checkpoint-only"], id="not-a-full-audit"),
    ],
)
def test_neighbour_arguments_that_do_not_go_together_are_refused(
    networks: Pair, tmp_path: Path, capsys: Capture, extra: list[str]
) -> None:
    status = main(["audit", str(networks.a.export), "--vkey", networks.a.vkey, "--no-state", "--quiet", *extra])
    assert status == 2
    assert "--neighbour" in capsys.readouterr().err


def test_a_forged_rejection_is_caught_in_the_neighbours_log(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    # A decision of the other kind naming an entry riverside's log does not hold fails the same way.
    b = copy_export(networks.b.export, tmp_path / "b")
    entries = read_entries(b)
    forged = CrossnetRejected(
        at=datetime.now(UTC),
        origin=ORIGIN,
        transfer=transfer_id("never-made"),
        index=7,
        payee=networks.b.accounts["bob"],
        minutes=50,
        reason="unknown_payee",
    )
    rewrite(b, networks.b.signer, [*entries, entry_encoder.encode(forged)])

    done = audit_pair(capsys, tmp_path, networks.a.export, b, networks)
    assert done.status == 1, done.out
    assert done.failed() == {"federation.pairing"}
    assert pairing_failures(done) == [
        (
            ORIGIN_B,
            len(entries),
            f"rejects {ORIGIN}'s transfer {forged.transfer} (entry 7), which {ORIGIN}'s log does not hold",
        )
    ]


ORIGIN_C = "timebank.test/lakeside"
LAKESIDE_CLEARING = "acct_" + "3" * 20


def with_lakeside(network: Network, tmp: Path, *, trade: bool) -> tuple[Path, int]:
    """A copy of the network's export that also dealt with a third network, lakeside, signed by its key: with
    ``trade``, a clearing account for lakeside, a payment to it, an acceptance of lakeside's payment and a rejection
    of another; otherwise only a rejection. The copy, and how many of its entries involve lakeside."""
    directory = copy_export(network.export, tmp)
    now = datetime.now(UTC)
    member = network.accounts.get("alice") or network.accounts["bob"]
    added: list[object] = [
        CrossnetRejected(
            at=now, origin=ORIGIN_C, transfer=transfer_id("lake-2"), index=4, payee=member, minutes=5, reason="x"
        )
    ]
    if trade:
        added = [
            AccountOpened(at=now, account=LAKESIDE_CLEARING, kind="peer", floor=-100, peer=ORIGIN_C),
            Transfer(
                at=now,
                id=transfer_id("to-lakeside"),
                payer=member,
                payee=LAKESIDE_CLEARING,
                minutes=20,
                remote=Remote(origin=ORIGIN_C, account="acct_" + "4" * 20),
            ),
            Transfer(
                at=now,
                id=transfer_id("from-lakeside"),
                payer=LAKESIDE_CLEARING,
                payee=member,
                minutes=10,
                remote=Remote(origin=ORIGIN_C, transfer=transfer_id("lake-1"), index=3),
            ),
            *added,
        ]
    rewrite(directory, network.signer, [*read_entries(directory), *(entry_encoder.encode(e) for e in added)])
    return directory, 3 if trade else 1


def test_entries_with_a_third_network_are_unpaired_not_paired(networks: Pair, tmp_path: Path, capsys: Capture) -> None:
    a, in_a = with_lakeside(networks.a, tmp_path / "a", trade=True)
    b, in_b = with_lakeside(networks.b, tmp_path / "b", trade=False)

    done = audit_pair(capsys, tmp_path, a, b, networks)
    assert done.status == 0, done.out
    pairing = done.check("federation.pairing")
    assert pairing["status"] == "pass", done.out
    # The five transfers between riverside and hillside pair up as before; none of lakeside's is counted with them.
    assert pairing["detail"] == (
        f"5 cross-network transfers paired; {in_a + in_b} cross-network entries unpaired, no log given to pair them "
        f"with: {in_a} in {ORIGIN}'s log with {ORIGIN_C}, {in_b} in {ORIGIN_B}'s log with {ORIGIN_C}; "
        f"balance_{ORIGIN}(peer:{ORIGIN_B}) + balance_{ORIGIN_B}(peer:{ORIGIN}) = 0"
    )


def test_a_log_audited_alone_reports_its_cross_network_entries_as_unpaired(
    networks: Pair, tmp_path: Path, capsys: Capture
) -> None:
    a, in_a = with_lakeside(networks.a, tmp_path / "a", trade=True)
    done = audit(capsys, tmp_path, str(a), "--vkey", networks.a.vkey)
    assert done.status == 0, done.out
    pairing = done.check("federation.pairing")
    assert pairing["status"] == "skip", done.out
    # With hillside: 3 payments out, 2 reversals of the rejected ones, the record of hillside's acceptance of the
    # third, 2 acceptances of hillside's payments.
    assert pairing["detail"] == (
        f"{8 + in_a} cross-network entries unpaired, no log given to pair them with: 8 in {ORIGIN}'s log with "
        f"{ORIGIN_B}, {in_a} in {ORIGIN}'s log with {ORIGIN_C} (give one with --neighbour)"
    )
    assert done.report["ok"] is True
