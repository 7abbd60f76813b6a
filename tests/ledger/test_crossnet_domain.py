"""Cross-network trades in the pure domain: given two networks' decisions so far, when one pays the other's member
or decides the neighbour's transfer, then these entries (or a refusal).

Network A pays through its clearing account for B (``peer:B``), naming B's member; B alone decides, by appending
``peer:A -> member`` or a rejection; on a rejection A reverses its own transfer.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.ledger.commands import (
    ChangeLimits,
    CloseAccount,
    DecideRemote,
    MakeTransfer,
    RecordAcceptance,
    Reverse,
    ReverseRejected,
    fingerprint,
)
from services.ledger.entries import (
    CrossnetAccepted,
    CrossnetRejected,
    Remote,
    Transfer,
    crossnet_transfer_id,
    entry_decoder,
    entry_encoder,
    transfer_id,
)
from services.ledger.ledger import Replay
from shared.errors import Conflict, Forbidden, InsufficientHours, Invalid, NotFound
from tests.ledger.test_domain import AT, UNKNOWN, Scenario

ORIGIN_A = "timebank.test/riverside"
ORIGIN_B = "timebank.test/hillside"
REMOTE_MEMBER = "acct_" + "b" * 20  # an account in the neighbour network


@pytest.fixture
def a() -> Scenario:
    """Network A, paying out: alice and its clearing account for B (trust limit 300 minutes)."""
    s = Scenario()
    s.open("alice")
    s.open("peer-b", kind="peer", peer=ORIGIN_B, floor=-300)
    return s


@pytest.fixture
def b() -> Scenario:
    """Network B, deciding: bob, a capped member, a community pot, and its clearing account for A (limit 300)."""
    s = Scenario()
    s.open("peer-a", kind="peer", peer=ORIGIN_A, floor=-300)
    s.open("bob")
    s.open("capped", ceiling=100)
    s.open("pot", kind="community")
    return s


def account(s: Scenario, key: str) -> str:
    return s.book.opens[key].account


def incoming(transfer: str, payee: str, minutes: int, index: int = 7, **fields: object) -> DecideRemote:
    return DecideRemote(origin=ORIGIN_A, transfer=transfer, index=index, payee=payee, minutes=minutes, **fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- outgoing


def test_transfer_to_a_peer_account_records_the_neighbour_and_the_remote_payee(a: Scenario) -> None:
    alice, peer = account(a, "alice"), account(a, "peer-b")
    entry = a.accept(MakeTransfer(key="t", payer=alice, payee=peer, minutes=30, remote_payee=REMOTE_MEMBER))
    assert entry == Transfer(
        at=AT,
        id=transfer_id("t"),
        payer=alice,
        payee=peer,
        minutes=30,
        remote=Remote(origin=ORIGIN_B, account=REMOTE_MEMBER),
    )
    assert (a.balance(alice), a.balance(peer)) == (-30, 30)


def test_transfer_to_a_peer_account_without_a_remote_payee_is_refused(a: Scenario) -> None:
    a.refuse(MakeTransfer(key="t", payer=account(a, "alice"), payee=account(a, "peer-b"), minutes=30), Invalid)


def test_remote_payee_on_a_transfer_inside_the_network_is_refused(a: Scenario) -> None:
    carol = a.open("carol")
    command = MakeTransfer(key="t", payer=account(a, "alice"), payee=carol, minutes=30, remote_payee=REMOTE_MEMBER)
    a.refuse(command, Invalid)


def test_a_peer_account_does_not_pay_by_ordinary_transfer(a: Scenario) -> None:
    a.refuse(MakeTransfer(key="t", payer=account(a, "peer-b"), payee=account(a, "alice"), minutes=1), Invalid)


def test_outgoing_transfer_obeys_the_peer_accounts_ceiling(a: Scenario) -> None:
    capped = a.open("peer-c", kind="peer", peer="timebank.test/capped", floor=-300, ceiling=50)
    alice = account(a, "alice")
    a.accept(MakeTransfer(key="t1", payer=alice, payee=capped, minutes=50, remote_payee=REMOTE_MEMBER))
    command = MakeTransfer(key="t2", payer=alice, payee=capped, minutes=1, remote_payee=REMOTE_MEMBER)
    assert a.refuse(command, InsufficientHours).extra == {"account": capped, "balance": 50, "ceiling": 50}


def test_outgoing_transfer_with_a_used_key_and_another_remote_payee_is_a_conflict(a: Scenario) -> None:
    alice, peer = account(a, "alice"), account(a, "peer-b")
    a.accept(MakeTransfer(key="t", payer=alice, payee=peer, minutes=30, remote_payee=REMOTE_MEMBER))
    other = "acct_" + "c" * 20
    a.refuse(MakeTransfer(key="t", payer=alice, payee=peer, minutes=30, remote_payee=other), Conflict)
    assert a.decide(MakeTransfer(key="t", payer=alice, payee=peer, minutes=30, remote_payee=REMOTE_MEMBER)) == Replay(2)


def test_fingerprint_of_a_transfer_without_remote_payee_is_the_one_stored_before_it_existed() -> None:
    """Replays of transfers recorded before ``remote_payee`` was added must still match their stored fingerprint."""
    command = MakeTransfer(key="t", payer=UNKNOWN, payee=REMOTE_MEMBER, minutes=5)
    before = (
        b'{"key":"t","payer":"' + UNKNOWN.encode() + b'","payee":"' + REMOTE_MEMBER.encode() + b'","minutes":5,'
        b'"memo_digest":null,"exchange_ref":null}'
    )
    assert fingerprint(command) == hashlib.sha256(before).digest()[:16]
    named = MakeTransfer(key="t", payer=UNKNOWN, payee=REMOTE_MEMBER, minutes=5, remote_payee=UNKNOWN)
    assert fingerprint(named) != fingerprint(command)


# ---------------------------------------------------------------------------------------------- deciding


def test_accepting_a_neighbours_transfer_pays_the_member_from_the_peer_account(b: Scenario) -> None:
    peer, bob = account(b, "peer-a"), account(b, "bob")
    sent = transfer_id("a's key")
    entry = b.accept(incoming(sent, bob, 45, index=12, memo_digest="ab" * 32))
    assert entry == Transfer(
        at=AT,
        id=crossnet_transfer_id(ORIGIN_A, sent),
        payer=peer,
        payee=bob,
        minutes=45,
        memo_digest="ab" * 32,
        remote=Remote(origin=ORIGIN_A, transfer=sent, index=12),
    )
    assert (b.balance(peer), b.balance(bob)) == (-45, 45)


@pytest.mark.parametrize(
    ("payee", "minutes", "reason"),
    [
        (UNKNOWN, 10, "unknown_payee"),
        ("pot", 10, "not_a_member"),
        ("peer-a", 10, "not_a_member"),
        ("closed", 10, "account_closed"),
        ("bob", 301, "trust_limit"),
        ("capped", 101, "ceiling"),
    ],
)
def test_a_neighbours_transfer_that_cannot_be_paid_is_rejected_in_the_log(
    b: Scenario, payee: str, minutes: int, reason: str
) -> None:
    b.accept(CloseAccount(account=b.open("closed")))
    payee_id = payee if payee.startswith("acct_") else account(b, payee)
    balances = {a.id: a.balance for a in b.book.accounts.values()}
    sent = transfer_id("a's key")
    entry = b.accept(incoming(sent, payee_id, minutes))
    assert entry == CrossnetRejected(
        at=AT, origin=ORIGIN_A, transfer=sent, index=7, payee=payee_id, minutes=minutes, reason=reason
    )
    assert {a.id: a.balance for a in b.book.accounts.values()} == balances


def test_trust_limit_is_the_peer_accounts_floor_down_to_the_minute(b: Scenario) -> None:
    bob = account(b, "bob")
    assert isinstance(b.accept(incoming(transfer_id("1"), bob, 300)), Transfer)
    rejected = b.accept(incoming(transfer_id("2"), bob, 1))
    assert isinstance(rejected, CrossnetRejected)
    assert rejected.reason == "trust_limit"
    assert b.balance(account(b, "peer-a")) == -300


def test_deciding_the_same_transfer_again_replays_the_acceptance(b: Scenario) -> None:
    bob = account(b, "bob")
    b.accept(incoming(transfer_id("t"), bob, 45))
    before = copy.deepcopy(b.book)
    assert b.decide(incoming(transfer_id("t"), bob, 45)) == Replay(4)
    assert b.book == before


def test_deciding_a_rejected_transfer_again_replays_the_rejection_even_when_it_would_now_fit(b: Scenario) -> None:
    bob, peer = account(b, "bob"), account(b, "peer-a")
    rejected = b.accept(incoming(transfer_id("t"), bob, 400))
    assert isinstance(rejected, CrossnetRejected)
    b.accept(ChangeLimits(account=peer, floor=-1000))  # the networks agree a higher limit later
    assert b.decide(incoming(transfer_id("t"), bob, 400)) == Replay(4)
    assert (b.balance(peer), b.balance(bob)) == (0, 0)


def test_a_decision_is_replayed_even_after_the_peer_account_is_closed(b: Scenario) -> None:
    rejected = b.accept(incoming(transfer_id("t"), UNKNOWN, 10))
    assert isinstance(rejected, CrossnetRejected)
    b.accept(CloseAccount(account=account(b, "peer-a")))
    assert b.decide(incoming(transfer_id("t"), UNKNOWN, 10)) == Replay(4)


@pytest.mark.parametrize(
    "change",
    [{"minutes": 46}, {"payee": "capped"}, {"index": 8}, {"memo_digest": "cd" * 32}],
    ids=["minutes", "payee", "index", "memo"],
)
def test_deciding_the_same_transfer_with_different_content_is_a_conflict(
    b: Scenario, change: dict[str, object]
) -> None:
    bob = account(b, "bob")
    b.accept(incoming(transfer_id("t"), bob, 45))
    fields: dict[str, object] = {"payee": bob, "minutes": 45, "index": 7, **change}
    if fields["payee"] == "capped":
        fields["payee"] = account(b, "capped")
    command = DecideRemote(origin=ORIGIN_A, transfer=transfer_id("t"), **fields)  # type: ignore[arg-type]
    assert b.refuse(command, Conflict).extra == {"origin": ORIGIN_A, "transfer": transfer_id("t"), "index": 4}


def test_a_transfer_from_a_network_without_a_peer_account_is_not_decided(b: Scenario) -> None:
    command = DecideRemote(
        origin="timebank.test/stranger", transfer=transfer_id("t"), index=0, payee=account(b, "bob"), minutes=5
    )
    assert b.refuse(command, NotFound).extra == {"origin": "timebank.test/stranger"}


def test_the_same_transfer_id_from_two_neighbours_is_two_decisions(b: Scenario) -> None:
    b.open("peer-c", kind="peer", peer="timebank.test/c", floor=-300)
    bob = account(b, "bob")
    first = b.accept(incoming(transfer_id("t"), bob, 5))
    second = b.accept(DecideRemote(origin="timebank.test/c", transfer=transfer_id("t"), index=7, payee=bob, minutes=5))
    assert isinstance(first, Transfer)
    assert isinstance(second, Transfer)
    assert first.id != second.id
    assert b.balance(bob) == 10


def test_a_transfer_decided_from_a_neighbour_cannot_be_reversed(b: Scenario) -> None:
    accepted = b.accept(incoming(transfer_id("t"), account(b, "bob"), 45))
    assert isinstance(accepted, Transfer)
    b.refuse(Reverse(key="r", transfer=accepted.id), Invalid)


def send(a: Scenario, minutes: int, key: str = "t") -> Transfer:
    """Alice (in A) pays B's member ``minutes`` through A's clearing account for B."""
    sent = a.accept(
        MakeTransfer(
            key=key, payer=account(a, "alice"), payee=account(a, "peer-b"), minutes=minutes, remote_payee=REMOTE_MEMBER
        )
    )
    assert isinstance(sent, Transfer)
    return sent


def from_b(payee: str, minutes: int, key: str = "b") -> DecideRemote:
    """B's payment of ``minutes`` to ``payee`` in A, for A to decide."""
    return DecideRemote(origin=ORIGIN_B, transfer=transfer_id(key), index=0, payee=payee, minutes=minutes)


def test_a_refused_outgoing_transfer_is_reversed_once_and_the_reversal_stays(a: Scenario) -> None:
    alice, peer = account(a, "alice"), account(a, "peer-b")
    sent = send(a, 30)
    back = a.accept(ReverseRejected(key="back", origin=ORIGIN_B, transfer=sent.id, index=3))
    assert back == Transfer(at=AT, id=transfer_id("back"), payer=peer, payee=alice, minutes=30, reverses=sent.id)
    assert (a.balance(alice), a.balance(peer)) == (0, 0)
    a.refuse(Reverse(key="again", transfer=back.id), Invalid)  # would send the minutes out unannounced
    a.refuse(ReverseRejected(key="again", origin=ORIGIN_B, transfer=sent.id, index=3), Conflict)
    assert a.decide(ReverseRejected(key="back", origin=ORIGIN_B, transfer=sent.id, index=3)) == Replay(3)


def test_minutes_in_flight_do_not_count_as_credit_so_a_rejection_can_always_be_reversed(a: Scenario) -> None:
    """The former gap: A's undecided payment is in the clearing account's balance, but A does not accept B's
    payments against it; when B rejects it, the reversal finds the minutes there."""
    alice, peer = account(a, "alice"), account(a, "peer-b")
    sent = send(a, 100)
    assert a.book.accounts[peer].in_flight == 100
    refused = a.accept(from_b(alice, 400, key="b1"))  # 100 - 400 = -300 would reach the limit only on credit
    assert isinstance(refused, CrossnetRejected)
    assert refused.reason == "trust_limit"
    assert isinstance(a.accept(from_b(alice, 300, key="b2")), Transfer)  # settled: 0 - 300 = -300, the limit
    a.accept(ReverseRejected(key="back", origin=ORIGIN_B, transfer=sent.id, index=5))
    assert (a.balance(peer), a.book.accounts[peer].in_flight) == (-300, 0)


def test_an_accepted_payment_counts_as_settled_from_its_record(a: Scenario) -> None:
    alice, peer = account(a, "alice"), account(a, "peer-b")
    sent = send(a, 100)
    recorded = a.accept(RecordAcceptance(origin=ORIGIN_B, transfer=sent.id, index=9))
    assert recorded == CrossnetAccepted(at=AT, origin=ORIGIN_B, transfer=sent.id, index=9)
    assert (a.balance(alice), a.balance(peer), a.book.accounts[peer].in_flight) == (-100, 100, 0)
    assert isinstance(a.accept(from_b(alice, 400)), Transfer)  # 100 settled - 400 = -300: the limit
    assert a.decide(RecordAcceptance(origin=ORIGIN_B, transfer=sent.id, index=9)) == Replay(3)


def test_an_acceptance_recorded_for_a_different_decision_is_a_conflict(a: Scenario) -> None:
    sent = send(a, 100)
    a.accept(RecordAcceptance(origin=ORIGIN_B, transfer=sent.id, index=9))
    refusal = a.refuse(RecordAcceptance(origin=ORIGIN_B, transfer=sent.id, index=10), Conflict)
    assert refusal.extra == {"transfer": sent.id, "index": 3}


def test_an_acceptance_is_recorded_only_for_our_payment_to_that_neighbour(a: Scenario) -> None:
    alice, carol = account(a, "alice"), a.open("carol")
    sent = send(a, 100)
    local = a.pay("local", alice, carol, 5)
    a.open("peer-c", kind="peer", peer="timebank.test/c", floor=-300)
    a.refuse(RecordAcceptance(origin=ORIGIN_B, transfer=transfer_id("nope"), index=1), NotFound)
    a.refuse(RecordAcceptance(origin=ORIGIN_B, transfer=local.id, index=1), Invalid)
    a.refuse(RecordAcceptance(origin="timebank.test/c", transfer=sent.id, index=1), Invalid)
    incoming = a.accept(from_b(alice, 10))
    assert isinstance(incoming, Transfer)
    a.refuse(RecordAcceptance(origin=ORIGIN_B, transfer=incoming.id, index=1), Invalid)


def test_a_reversed_payment_cannot_be_recorded_as_accepted_nor_an_accepted_one_reversed(a: Scenario) -> None:
    rejected, accepted = send(a, 10, key="t1"), send(a, 20, key="t2")
    a.accept(ReverseRejected(key="back", origin=ORIGIN_B, transfer=rejected.id, index=1))
    a.refuse(RecordAcceptance(origin=ORIGIN_B, transfer=rejected.id, index=2), Conflict)
    a.accept(RecordAcceptance(origin=ORIGIN_B, transfer=accepted.id, index=3))
    a.refuse(ReverseRejected(key="back2", origin=ORIGIN_B, transfer=accepted.id, index=4), Conflict)


def test_only_the_federations_reversal_undoes_a_payment_to_a_neighbour(a: Scenario) -> None:
    """A coordinator's reversal of a payment in flight would pay twice if the neighbour then accepted it."""
    sent = send(a, 30)
    a.refuse(Reverse(key="back", transfer=sent.id), Forbidden)
    a.refuse(ReverseRejected(key="back", origin="timebank.test/c", transfer=sent.id, index=1), Invalid)
    carol = a.open("carol")
    local = a.pay("local", account(a, "alice"), carol, 5)
    a.refuse(ReverseRejected(key="back", origin=ORIGIN_B, transfer=local.id, index=1), Invalid)


def test_a_clearing_account_with_minutes_in_flight_cannot_be_closed(a: Scenario) -> None:
    alice, peer = account(a, "alice"), account(a, "peer-b")
    sent = send(a, 30)
    assert isinstance(a.accept(from_b(alice, 30)), Transfer)  # balance 0, with 30 in flight
    assert a.refuse(CloseAccount(account=peer), Conflict).extra == {"in_flight": 30}
    a.accept(RecordAcceptance(origin=ORIGIN_B, transfer=sent.id, index=1))
    a.accept(CloseAccount(account=peer))


def test_crossnet_entries_encode_with_their_tags_and_decode_back(a: Scenario, b: Scenario) -> None:
    sent = a.accept(
        MakeTransfer(
            key="t", payer=account(a, "alice"), payee=account(a, "peer-b"), minutes=5, remote_payee=REMOTE_MEMBER
        )
    )
    accepted = b.accept(incoming(transfer_id("t"), account(b, "bob"), 5))
    rejected = b.accept(incoming(transfer_id("u"), UNKNOWN, 5))
    recorded = a.accept(RecordAcceptance(origin=ORIGIN_B, transfer=transfer_id("t"), index=4))
    assert msgspec.json.decode(entry_encoder.encode(recorded)) == {
        "type": "ledger.crossnet.accepted.v1",
        "at": "2025-03-01T12:00:00Z",
        "origin": ORIGIN_B,
        "transfer": transfer_id("t"),
        "index": 4,
    }
    for entry, tag in [
        (sent, "ledger.transfer.v1"),
        (accepted, "ledger.transfer.v1"),
        (recorded, "ledger.crossnet.accepted.v1"),
    ]:
        data = entry_encoder.encode(entry)
        assert f'"type":"{tag}"'.encode() in data
        assert entry_decoder.decode(data) == entry
    data = entry_encoder.encode(rejected)
    assert msgspec.json.decode(data) == {
        "type": "ledger.crossnet.rejected.v1",
        "at": "2025-03-01T12:00:00Z",
        "origin": ORIGIN_A,
        "transfer": transfer_id("u"),
        "index": 7,
        "payee": UNKNOWN,
        "minutes": 5,
        "reason": "unknown_payee",
    }
    assert entry_decoder.decode(data) == rejected


def test_a_transfer_inside_the_network_is_stored_without_a_remote_part(a: Scenario) -> None:
    entry = a.accept(MakeTransfer(key="t", payer=account(a, "alice"), payee=a.open("carol"), minutes=5))
    assert b"remote" not in entry_encoder.encode(entry)


def test_no_idempotency_key_can_derive_a_crossnet_transfer_id() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(
            {"key": f"crossnet\x00{ORIGIN_A}\x00{transfer_id('t')}", "payer": UNKNOWN, "payee": UNKNOWN, "minutes": 1},
            MakeTransfer,
        )


# ---------------------------------------------------------------------------------------------- property

# ("pay", paying network, payer, remote payee, minutes) or (action, pick, 0, 0, 0) for "decide", "replay", "settle",
# "record" (the payer records the neighbour's acceptance).
Step = tuple[str, int, int, int, int]


@st.composite
def trade_plans(draw: st.DrawFn) -> tuple[int, int, list[Step]]:
    """Trust limits of the two networks and an interleaving of payments, decisions, replays and reversals."""
    limits = draw(st.integers(0, 200)), draw(st.integers(0, 200))
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["pay", "pay", "decide", "decide", "replay", "settle", "record"]))
        if kind == "pay":
            side, payer, payee = draw(st.integers(0, 1)), draw(st.integers(0, 1)), draw(st.integers(0, 5))
            steps.append(("pay", side, payer, payee, draw(st.integers(1, 120))))
        else:
            steps.append((kind, draw(st.integers(0, 50)), 0, 0, 0))
    return limits[0], limits[1], steps


@dataclass
class Network:
    """One network's pure ledger: its clearing account for the neighbour, and the accounts a neighbour may name."""

    origin: str
    s: Scenario
    peer: str
    accounts: list[str]  # two members, a capped member, a closed member, the pot, the clearing account


def network(origin: str, neighbour: str, limit: int) -> Network:
    s = Scenario()
    peer = s.open("peer", kind="peer", peer=neighbour, floor=-limit)
    members = [s.open("m0"), s.open("m1", floor=-50), s.open("capped", ceiling=60), s.open("closed")]
    s.accept(CloseAccount(account=members[3]))
    return Network(origin, s, peer, [*members, s.open("pot", kind="community"), peer])


class TwoNetworks:
    """Two networks and the federation between them, done by hand: relay payments, decisions and reversals."""

    def __init__(self, limit_a: int, limit_b: int) -> None:
        self.nets = (network(ORIGIN_A, ORIGIN_B, limit_a), network(ORIGIN_B, ORIGIN_A, limit_b))
        self.sent: list[tuple[int, Transfer, int]] = []  # (paying network, its transfer, its index in its log)
        self.undecided: list[int] = []  # positions in ``sent``
        self.rejected: list[int] = []  # rejected by the neighbour, not reversed yet
        self.unrecorded: list[int] = []  # accepted by the neighbour, the payer has not recorded it yet
        self.decided: dict[int, Transfer | CrossnetRejected] = {}

    def pay(self, side: int, payer: int, payee: int, minutes: int, key: str) -> None:
        net, neighbour = self.nets[side], self.nets[1 - side]
        command = MakeTransfer(
            key=key, payer=net.accounts[payer], payee=net.peer, minutes=minutes, remote_payee=neighbour.accounts[payee]
        )
        try:
            entry = net.s.accept(command)
        except InsufficientHours:
            return
        assert isinstance(entry, Transfer)
        self.sent.append((side, entry, len(net.s.entries) - 1))
        self.undecided.append(len(self.sent) - 1)

    def decide(self, n: int) -> None:
        side, transfer, index = self.sent[n]
        assert transfer.remote is not None
        assert transfer.remote.account is not None
        receiver = self.nets[1 - side].s
        command = DecideRemote(
            origin=self.nets[side].origin,
            transfer=transfer.id,
            index=index,
            payee=transfer.remote.account,
            minutes=transfer.minutes,
        )
        outcome = receiver.decide(command)
        if n in self.decided:
            assert isinstance(outcome, Replay), "a neighbour's transfer was decided twice"
            assert receiver.entries[outcome.index] == self.decided[n]
            return
        assert isinstance(outcome, Transfer | CrossnetRejected)
        self.decided[n] = outcome
        self.undecided.remove(n)
        if isinstance(outcome, CrossnetRejected):
            self.rejected.append(n)
        else:
            self.unrecorded.append(n)

    def record(self, n: int) -> None:
        """The payer records the neighbour's acceptance: those minutes are settled from now on."""
        self.unrecorded.remove(n)
        side, transfer, _ = self.sent[n]
        receiver = self.nets[1 - side]
        at = receiver.s.entries.index(self.decided[n])
        command = RecordAcceptance(origin=receiver.origin, transfer=transfer.id, index=at)
        assert isinstance(self.nets[side].s.accept(command), CrossnetAccepted)

    def settle(self, n: int) -> None:
        """The payer reverses its transfer the neighbour rejected: never refused, since only settled minutes
        counted when the payer accepted its neighbour's payments."""
        self.rejected.remove(n)
        side, transfer, _ = self.sent[n]
        net, neighbour = self.nets[side], self.nets[1 - side]
        at = neighbour.s.entries.index(self.decided[n])
        command = ReverseRejected(key=f"back-{transfer.id}", origin=neighbour.origin, transfer=transfer.id, index=at)
        assert isinstance(net.s.accept(command), Transfer)

    def in_flight(self) -> int:
        return sum(self.sent[n][1].minutes for n in self.undecided + self.rejected)

    def check(self) -> None:
        a, b = self.nets
        assert a.s.balance(a.peer) + b.s.balance(b.peer) == self.in_flight()
        for side, net in enumerate(self.nets):
            # What the payer counts as in flight: its payments neither recorded as accepted nor reversed.
            waiting = self.undecided + self.rejected + self.unrecorded
            expected = sum(t.minutes for n, (s, t, _) in enumerate(self.sent) if s == side and n in waiting)
            assert net.s.book.accounts[net.peer].in_flight == expected
        for net in self.nets:
            assert sum(acc.balance for acc in net.s.book.accounts.values()) == 0
            for acc in net.s.book.accounts.values():
                assert acc.balance >= acc.floor
                assert acc.ceiling is None or acc.balance <= acc.ceiling


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trade_plans())
def test_two_networks_clearing_accounts_net_to_the_minutes_in_flight(plan: tuple[int, int, list[Step]]) -> None:
    """Whatever the interleaving, each log sums to zero, no limit is crossed, nothing is decided twice, and
    balance_A(peer:B) + balance_B(peer:A) is the minutes still in flight: zero once everything is decided and every
    rejection reversed."""
    limit_a, limit_b, steps = plan
    two = TwoNetworks(limit_a, limit_b)
    for n, (action, x, payer, payee, minutes) in enumerate(steps):
        if action == "pay":
            two.pay(x, payer, payee, minutes, key=f"pay-{n}")
        elif action == "decide" and two.undecided:
            two.decide(two.undecided[x % len(two.undecided)])
        elif action == "replay" and two.decided:
            two.decide(list(two.decided)[x % len(two.decided)])
        elif action == "settle" and two.rejected:
            two.settle(two.rejected[x % len(two.rejected)])
        elif action == "record" and two.unrecorded:
            two.record(two.unrecorded[x % len(two.unrecorded)])
        two.check()
    while two.undecided:
        two.decide(two.undecided[0])
    while two.rejected:
        two.settle(two.rejected[0])
    while two.unrecorded:
        two.record(two.unrecorded[0])
    two.check()
    a, b = two.nets
    assert a.s.balance(a.peer) + b.s.balance(b.peer) == 0
    accepted = [(side, t.minutes) for n, (side, t, _) in enumerate(two.sent) if isinstance(two.decided[n], Transfer)]
    assert a.s.balance(a.peer) == sum(m for side, m in accepted if side == 0) - sum(
        m for side, m in accepted if side == 1
    )
    event(f"accepted >= {min(len(accepted), 3)}")
    event(f"rejected >= {min(len(two.sent) - len(accepted), 3)}")
