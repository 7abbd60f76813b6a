"""The ledger's client against a real ledger process: idempotent commands, refusals, outages, paged reads, limits
and closing, reversals, cross-network decisions and the public log's reads."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from services.ledger.client import LedgerClient, LedgerRefused, LedgerUnavailable
from services.ledger.entries import transfer_id
from services.node.postgres import PostgresServer
from services.node.processes import free_port
from shared.logverify import TreeState, check_cosignatures, verify_batch, verify_checkpoint
from shared.merkle import leaf_hash, verify_consistency, verify_inclusion
from shared.note import CosignatureSigner, Signature, Signer
from tests.ledger.conftest import ORIGIN, TOKENS
from tests.ledger.processes import ledger_on_own_database

# The served ledger signs with this key, so the tests can verify what it serves.
SIGNER = Signer.generate(ORIGIN)


@pytest.fixture(scope="module")
def ledger_url(postgres_server: PostgresServer) -> Iterator[str]:
    """Base URL of a `timebank serve --only ledger` process, shared by this module's tests (keys are unique)."""
    with ledger_on_own_database(postgres_server, "client_ledger", SIGNER) as url:
        yield url


@pytest.fixture
async def ledger_client(ledger_url: str) -> AsyncIterator[LedgerClient]:
    """A started client with the ledger's service token."""
    async with LedgerClient(ledger_url, TOKENS["service"]) as client:
        yield client


@pytest.fixture
def unique() -> str:
    """A prefix no other test uses, for idempotency keys on the shared ledger."""
    return secrets.token_hex(6)


async def test_opening_an_account_twice_with_one_key_answers_with_the_same_account(
    ledger_client: LedgerClient, unique: str
) -> None:
    first = await ledger_client.open_account(f"{unique}-member-1")
    again = await ledger_client.open_account(f"{unique}-member-1")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.account == first.account
    assert again.index == first.index
    assert again.owner_token == first.owner_token
    assert (first.kind, first.floor, first.ceiling) == ("member", -600, None)
    view = await ledger_client.account(first.account)
    assert (view.id, view.balance, view.floor, view.closed, view.opened_index) == (
        first.account,
        0,
        -600,
        False,
        first.index,
    )


async def test_a_community_pot_opens_with_a_zero_floor_and_the_limits_asked_for(
    ledger_client: LedgerClient, unique: str
) -> None:
    pot = await ledger_client.open_account(f"{unique}-pot", kind="community")
    capped = await ledger_client.open_account(f"{unique}-capped", floor=-120, ceiling=300)

    assert (pot.kind, pot.floor) == ("community", 0)
    assert (capped.floor, capped.ceiling) == (-120, 300)


async def test_a_transfer_key_posts_once_and_a_repeat_answers_with_the_original(
    ledger_client: LedgerClient, unique: str
) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    digest = "ab" * 32

    first = await ledger_client.transfer(f"{unique}-ex", payer, payee, 90, memo_digest=digest, exchange_ref="ex_1")
    again = await ledger_client.transfer(f"{unique}-ex", payer, payee, 90, memo_digest=digest, exchange_ref="ex_1")

    assert (first.replayed, again.replayed) == (False, True)
    assert (again.id, again.index, again.at) == (first.id, first.index, first.at)
    assert (first.payer, first.payee, first.minutes, first.memo_digest, first.exchange_ref) == (
        payer,
        payee,
        90,
        digest,
        "ex_1",
    )
    lines = [line async for line in ledger_client.statement_lines(payer)]
    assert [(line.transfer, line.delta, line.counterparty, line.memo_digest) for line in lines] == [
        (first.id, -90, payee, digest)
    ]
    assert (await ledger_client.account(payee)).balance == 90


async def test_refusals_carry_the_ledgers_problem_document(ledger_client: LedgerClient, unique: str) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account

    with pytest.raises(LedgerRefused) as beyond_floor:
        await ledger_client.transfer(f"{unique}-big", payer, payee, 601)
    assert (beyond_floor.value.status, beyond_floor.value.slug) == (409, "insufficient-hours")
    assert beyond_floor.value.problem["extra"] == {"account": payer, "balance": 0, "floor": -600}

    await ledger_client.transfer(f"{unique}-t", payer, payee, 30)
    with pytest.raises(LedgerRefused) as reused_key:
        await ledger_client.transfer(f"{unique}-t", payer, payee, 31)
    assert (reused_key.value.status, reused_key.value.slug) == (409, "conflict")

    with pytest.raises(LedgerRefused) as unknown:
        await ledger_client.transfer(f"{unique}-u", payer, "acct_" + "0" * 20, 5)
    assert (unknown.value.status, unknown.value.slug) == (404, "not-found")

    with pytest.raises(LedgerRefused) as invalid:
        await ledger_client.transfer(f"{unique}-v", payer, payee, 0)
    assert invalid.value.status == 400
    # Nothing refused reached the payer's statement.
    assert [line.delta async for line in ledger_client.statement_lines(payer)] == [-30]


async def test_a_wrong_service_token_is_refused_as_unauthorized(ledger_url: str, unique: str) -> None:
    async with LedgerClient(ledger_url, "not-the-token") as client:
        with pytest.raises(LedgerRefused) as refused:
            await client.open_account(f"{unique}-m")
    assert (refused.value.status, refused.value.slug) == (401, "unauthorized")


async def test_a_ledger_nobody_listens_for_is_unavailable() -> None:
    async with LedgerClient(f"http://127.0.0.1:{free_port()}", TOKENS["service"]) as client:
        with pytest.raises(LedgerUnavailable):
            await client.transfer("k", "acct_" + "1" * 20, "acct_" + "2" * 20, 5)


async def test_a_ledger_that_never_answers_is_unavailable_after_the_timeout() -> None:
    accepted = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with LedgerClient(f"http://127.0.0.1:{port}", TOKENS["service"], timeout=0.3) as client:
            with pytest.raises(LedgerUnavailable, match="Timeout"):
                await client.ready()
        assert accepted.is_set()
    finally:
        server.close()
        await server.wait_closed()


async def test_statements_are_read_page_by_page_as_the_ledger_pages_them(
    ledger_client: LedgerClient, unique: str
) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    posted = [await ledger_client.transfer(f"{unique}-{i}", payer, payee, 10 + i) for i in range(5)]

    first = await ledger_client.statement(payer, limit=2)
    second = await ledger_client.statement(payer, limit=2, before=first.next_before)
    last = await ledger_client.statement(payer, limit=2, before=second.next_before)

    newest_first = [t.id for t in reversed(posted)]
    assert [line.transfer for line in first.lines + second.lines + last.lines] == newest_first
    assert last.next_before is None
    assert [line.balance for line in first.lines] == [-60, -46]
    assert [line.transfer async for line in ledger_client.statement_lines(payer, page_size=2)] == newest_first


async def test_ready_reports_the_log_size(ledger_client: LedgerClient, unique: str) -> None:
    before = (await ledger_client.ready()).log_size
    await ledger_client.open_account(f"{unique}-m")
    status = await ledger_client.ready()
    assert status.status == "ready"
    assert status.log_size >= before + 1


async def test_limits_change_and_an_emptied_account_closes(ledger_client: LedgerClient, unique: str) -> None:
    account = (await ledger_client.open_account(f"{unique}-m")).account

    changed = await ledger_client.change_limits(account, floor=-120, ceiling=240)
    assert (changed.id, changed.floor, changed.ceiling, changed.closed) == (account, -120, 240, False)
    assert ((await ledger_client.account(account)).floor, (await ledger_client.account(account)).ceiling) == (
        -120,
        240,
    )
    uncapped = await ledger_client.change_limits(account, floor=-60)
    assert (uncapped.floor, uncapped.ceiling) == (-60, None)

    closed = await ledger_client.close_account(account)
    assert closed.closed
    assert (await ledger_client.account(account)).closed
    with pytest.raises(LedgerRefused) as again:
        await ledger_client.close_account(account)
    assert again.value.status == 409


async def test_a_reversal_undoes_a_transfer_once(ledger_client: LedgerClient, unique: str) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    original = await ledger_client.transfer(f"{unique}-t", payer, payee, 40)

    reversal = await ledger_client.reverse(f"{unique}-r", original.id)
    again = await ledger_client.reverse(f"{unique}-r", original.id)

    assert (reversal.reverses, reversal.payer, reversal.payee, reversal.minutes) == (original.id, payee, payer, 40)
    assert (reversal.replayed, again.replayed, again.id) == (False, True, reversal.id)
    assert (await ledger_client.account(payer)).balance == 0
    with pytest.raises(LedgerRefused) as unknown:
        await ledger_client.reverse(f"{unique}-r2", transfer_id(f"{unique}-never-posted"))
    assert (unknown.value.status, unknown.value.slug) == (404, "not-found")


async def test_a_neighbours_transfer_is_decided_once_and_the_decision_can_be_read(
    ledger_url: str, ledger_client: LedgerClient, unique: str
) -> None:
    neighbour = f"timebank.test/{unique}"
    await ledger_client.open_account(f"{unique}-peer", kind="peer", floor=-100, peer=neighbour)
    member = (await ledger_client.open_account(f"{unique}-m")).account
    sent, too_big = transfer_id(f"{unique}-sent"), transfer_id(f"{unique}-too-big")

    with pytest.raises(LedgerRefused) as refused:
        await ledger_client.decide_remote(neighbour, sent, 7, member, 30)
    assert refused.value.status == 403  # the service's token may not decide: only the federation's
    async with LedgerClient(ledger_url, TOKENS["federation"]) as federation:
        accepted = await federation.decide_remote(neighbour, sent, 7, member, 30)
        repeated = await federation.decide_remote(neighbour, sent, 7, member, 30)
        rejected = await federation.decide_remote(neighbour, too_big, 8, member, 500)

    assert (accepted.decision, accepted.payee, accepted.minutes, accepted.transfer_index) == ("accepted", member, 30, 7)
    assert (repeated.replayed, repeated.id, repeated.index) == (True, accepted.id, accepted.index)
    assert rejected.decision == "rejected"
    assert rejected.reason
    assert (await ledger_client.account(member)).balance == 30
    read = await ledger_client.remote_decision(neighbour, sent)
    assert (read.decision, read.id, read.index) == ("accepted", accepted.id, accepted.index)
    with pytest.raises(LedgerRefused) as undecided:
        await ledger_client.remote_decision(neighbour, transfer_id(f"{unique}-unknown"))
    assert undecided.value.status == 404


async def test_the_public_log_reads_verify_against_each_other(ledger_client: LedgerClient, unique: str) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    posted = await ledger_client.transfer(f"{unique}-t", payer, payee, 15)
    size = (await ledger_client.ready()).log_size

    entries = await ledger_client.entries(posted.index, posted.index + 1)
    assert [entry.index for entry in entries.entries] == [posted.index]
    proof = await ledger_client.inclusion_proof(posted.index, size)
    assert proof.leaf_hash == leaf_hash(entries.entries[0].data)
    verify_inclusion(proof.leaf_hash, posted.index, size, proof.proof, proof.root)

    grown = await ledger_client.transfer(f"{unique}-t2", payer, payee, 5)
    later = await ledger_client.inclusion_proof(grown.index, grown.index + 1)
    consistency = await ledger_client.consistency_proof(size, grown.index + 1)
    assert (consistency.old_root, consistency.new_root) == (proof.root, later.root)
    verify_consistency(size, grown.index + 1, consistency.old_root, consistency.new_root, consistency.proof)

    balances = await ledger_client.balances()
    assert sum(account.balance for account in balances.accounts) == 0
    assert {a.id: a.balance for a in balances.accounts}[payer] == -20
    # Checkpoints are signed per batch: the one covering the second transfer may take a moment.
    for _ in range(200):
        checkpoint = await ledger_client.checkpoint()
        if int(checkpoint.split(b"\n")[1]) > grown.index:
            break
        await asyncio.sleep(0.05)
    assert checkpoint.startswith(f"{ORIGIN}\n".encode())
    bundle = await ledger_client.proof_bundle(grown.index)
    assert bundle.startswith("c2sp.org/tlog-proof@v1\n")
    assert f"\nindex {grown.index}\n" in bundle


async def test_the_signed_checkpoints_verify_the_log_batch_by_batch(ledger_client: LedgerClient, unique: str) -> None:
    payer = (await ledger_client.open_account(f"{unique}-payer")).account
    payee = (await ledger_client.open_account(f"{unique}-payee")).account
    await asyncio.gather(*(ledger_client.transfer(f"{unique}-{n}", payer, payee, 1) for n in range(20)))
    size = (await ledger_client.ready()).log_size
    for _ in range(200):
        signed = await ledger_client.checkpoints(0, limit=1000)
        if signed and signed[-1].size >= size:
            break
        await asyncio.sleep(0.05)

    key = SIGNER.verifier()
    state = TreeState()
    for checkpoint in signed:
        verified = verify_checkpoint(checkpoint.note.encode(), key)
        entries = (await ledger_client.entries(state.size, checkpoint.size)).entries
        state = verify_batch(state, state.size, [e.data for e in entries], verified)
    assert state.size == signed[-1].size >= size
    assert [c.size for c in await ledger_client.checkpoints(signed[-2].size)] == [signed[-1].size]


async def test_witness_cosignatures_are_served_with_their_checkpoint_and_only_the_federation_adds_them(
    ledger_url: str, ledger_client: LedgerClient, unique: str
) -> None:
    await ledger_client.open_account(f"{unique}-cosigned")
    for _ in range(200):
        note = await ledger_client.checkpoint()
        if int(note.split(b"\n")[1]) == (await ledger_client.ready()).log_size:
            break
        await asyncio.sleep(0.05)
    size = int(note.split(b"\n")[1])
    text = note.decode()[: note.decode().index("\n\n") + 1]
    witness = CosignatureSigner.generate(f"{unique}.witness.test/w1")
    line = Signature(witness.name, witness.key_id, witness.sign(text, 1_700_000_000)).to_line()

    with pytest.raises(LedgerRefused) as refused:
        await ledger_client.add_cosignatures(size, [line])
    assert refused.value.status == 403
    async with LedgerClient(ledger_url, TOKENS["federation"]) as federation:
        with pytest.raises(LedgerRefused) as malformed:
            await federation.add_cosignatures(size, ["not a signature line"])
        assert malformed.value.status == 422
        with pytest.raises(LedgerRefused) as unknown:
            await federation.add_cosignatures(size + 10_000, [line])
        assert unknown.value.status == 404
        await federation.add_cosignatures(size, [line])

    served = await ledger_client.checkpoint()
    if int(served.split(b"\n")[1]) == size:  # no other test moved the log meanwhile
        assert check_cosignatures(served, [witness.verifier()]).meets(1)
        assert served.startswith(note)
