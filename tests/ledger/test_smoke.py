from tests.ledger.conftest import Ledger


async def test_transfer_moves_minutes_between_two_members(ledger: Ledger) -> None:
    alice = await ledger.open_account("alice")
    bob = await ledger.open_account("bob")
    r = await ledger.transfer("t1", str(alice["id"]), str(bob["id"]), 90)
    assert r.status_code == 201, r.text
    assert await ledger.balance(str(alice["id"])) == -90
    assert await ledger.balance(str(bob["id"])) == 90
