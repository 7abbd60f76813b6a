"""The ledger's HTTP API as its callers see it: accounts, transfers, statements, idempotency, bad input, access."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from services.ledger.app import create_app
from services.ledger.entries import Transfer, entry_decoder, transfer_id
from shared.note import Signer
from tests.ledger.conftest import Ledger, auth, ledger_settings
from tests.ledger.support import assert_problem, entries, log_state

UNKNOWN_ACCOUNT = "acct_" + "0" * 20
UNKNOWN_TRANSFER = transfer_id("a key nobody used")


def owner(account: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {account['owner_token']}"}


async def pair(ledger: Ledger) -> tuple[str, str]:
    alice = await ledger.open_account("alice")
    bob = await ledger.open_account("bob")
    return str(alice["id"]), str(bob["id"])


# ---------------------------------------------------------------------------------------------- opening accounts


async def test_opening_a_member_account_returns_it_with_the_default_floor(ledger: Ledger) -> None:
    r = await ledger.client.post("/accounts", json={"key": "alice"}, headers=auth("coordinator"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("acct_")
    assert {k: body[k] for k in ("kind", "floor", "ceiling", "balance", "closed", "peer", "opened_index")} == {
        "kind": "member",
        "floor": -600,
        "ceiling": None,
        "balance": 0,
        "closed": False,
        "peer": None,
        "opened_index": 0,
    }
    assert isinstance(body["owner_token"], str)
    assert body["owner_token"]
    opened = entry_decoder.decode((await entries(ledger.client))[0])
    assert (opened.account, opened.kind, opened.floor) == (body["id"], "member", -600)  # type: ignore[union-attr]


async def test_the_member_default_floor_comes_from_the_settings(database_url: str, signer: Signer) -> None:
    app = create_app(ledger_settings(default_floor=-240), database_url=database_url, signer=signer)
    async with AsyncTestClient(app=app) as client:
        member = await client.post("/accounts", json={"key": "m"}, headers=auth("coordinator"))
        pot = await client.post("/accounts", json={"key": "c", "kind": "community"}, headers=auth("coordinator"))
    assert (member.status_code, member.json()["floor"]) == (201, -240)
    assert (pot.status_code, pot.json()["floor"]) == (201, 0)


async def test_opening_a_community_account_gives_floor_zero(ledger: Ledger) -> None:
    pot = await ledger.open_account("pot", kind="community")
    assert (pot["kind"], pot["floor"], pot["peer"]) == ("community", 0, None)


async def test_opening_a_peer_account_records_the_peer_origin(ledger: Ledger) -> None:
    peer = await ledger.open_account("hill", kind="peer", peer="timebank.test/hillside")
    assert (peer["kind"], peer["floor"], peer["peer"]) == ("peer", 0, "timebank.test/hillside")


async def test_opening_with_explicit_limits_records_them(ledger: Ledger) -> None:
    account = await ledger.open_account("a", floor=-50, ceiling=300)
    assert (account["floor"], account["ceiling"]) == (-50, 300)


async def test_opening_a_peer_account_without_a_peer_origin_is_refused(ledger: Ledger) -> None:
    r = await ledger.client.post("/accounts", json={"key": "p", "kind": "peer"}, headers=auth("coordinator"))
    assert_problem(r, 422, "invalid")
    assert await entries(ledger.client) == []


async def test_opening_a_second_peer_account_for_the_same_network_is_refused(ledger: Ledger) -> None:
    await ledger.open_account("hill", kind="peer", peer="timebank.test/hillside")
    before = await log_state(ledger.client)
    r = await ledger.client.post(
        "/accounts",
        json={"key": "hill-2", "kind": "peer", "peer": "timebank.test/hillside"},
        headers=auth("coordinator"),
    )
    assert_problem(r, 409)
    assert await log_state(ledger.client) == before


async def test_opening_with_the_same_key_replays_the_original_account(ledger: Ledger) -> None:
    first = await ledger.open_account("alice", ceiling=100)
    before = await log_state(ledger.client)
    r = await ledger.client.post("/accounts", json={"key": "alice", "ceiling": 100}, headers=auth("service"))
    assert r.status_code == 200, r.text
    assert r.json() == first
    assert await log_state(ledger.client) == before


async def test_opening_with_a_used_key_and_different_content_is_a_conflict(ledger: Ledger) -> None:
    await ledger.open_account("alice")
    before = await log_state(ledger.client)
    r = await ledger.client.post("/accounts", json={"key": "alice", "kind": "community"}, headers=auth("service"))
    assert_problem(r, 409, "conflict")
    assert await log_state(ledger.client) == before


# ---------------------------------------------------------------------------------------------- transfers


async def test_transfer_returns_the_logged_entry_and_moves_minutes(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    digest = "0f" * 32
    r = await ledger.transfer("t1", alice, bob, 90, memo_digest=digest, exchange_ref="exchange/42")
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: body[k] for k in ("id", "index", "payer", "payee", "minutes", "memo_digest", "exchange_ref")} == {
        "id": transfer_id("t1"),
        "index": 2,
        "payer": alice,
        "payee": bob,
        "minutes": 90,
        "memo_digest": digest,
        "exchange_ref": "exchange/42",
    }
    assert (body["reverses"], body["replayed"]) == (None, False)
    logged = entry_decoder.decode((await entries(ledger.client))[2])
    assert isinstance(logged, Transfer)
    assert (logged.id, logged.payer, logged.payee, logged.minutes, logged.memo_digest) == (
        body["id"],
        alice,
        bob,
        90,
        digest,
    )
    assert logged.at.isoformat() == body["at"]
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (-90, 90)


async def test_transfer_of_the_maximum_minutes_is_accepted(ledger: Ledger) -> None:
    rich = str((await ledger.open_account("rich", floor=-100_000))["id"])
    bob = str((await ledger.open_account("bob"))["id"])
    r = await ledger.transfer("t", rich, bob, 60_000)
    assert r.status_code == 201, r.text
    assert await ledger.balance(bob) == 60_000


async def test_transfer_beyond_floor_is_refused(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    assert (await ledger.transfer("t1", alice, bob, 550)).status_code == 201
    before = await log_state(ledger.client)
    r = await ledger.transfer("t2", alice, bob, 51)
    body = assert_problem(r, 409, "insufficient-hours")
    assert body["extra"] == {"account": alice, "balance": -550, "floor": -600}
    assert await log_state(ledger.client) == before
    assert await ledger.balance(alice) == -550


async def test_transfer_above_the_payees_ceiling_is_refused(ledger: Ledger) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    capped = str((await ledger.open_account("capped", ceiling=100))["id"])
    before = await log_state(ledger.client)
    assert_problem(await ledger.transfer("t", alice, capped, 101), 409, "insufficient-hours")
    assert await log_state(ledger.client) == before


async def test_transfer_with_the_same_key_replays_the_original(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    first = await ledger.transfer("t1", alice, bob, 30)
    assert first.status_code == 201
    before = await log_state(ledger.client)
    again = await ledger.transfer("t1", alice, bob, 30)
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "replayed": True}
    assert await log_state(ledger.client) == before
    assert len(before[2]) == before[0] == 3
    assert await ledger.balance(alice) == -30


async def test_transfer_with_a_used_key_and_different_content_is_a_conflict(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    assert (await ledger.transfer("t1", alice, bob, 30)).status_code == 201
    before = await log_state(ledger.client)
    assert_problem(await ledger.transfer("t1", alice, bob, 31), 409, "conflict")
    assert_problem(await ledger.transfer("t1", bob, alice, 30), 409, "conflict")
    assert await log_state(ledger.client) == before
    assert await ledger.balance(alice) == -30


# ---------------------------------------------------------------------------------------------- reading accounts


async def test_statement_lists_postings_newest_first_in_pages(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    carol = str((await ledger.open_account("carol"))["id"])
    moves = [
        ("t1", alice, bob, 10),
        ("t2", bob, alice, 3),
        ("t3", alice, carol, 20),
        ("t4", carol, bob, 5),
        ("t5", alice, bob, 7),
    ]
    for key, payer, payee, minutes in moves:
        assert (await ledger.transfer(key, payer, payee, minutes)).status_code == 201
    # alice's postings, oldest first: t1 -10 (-10), t2 +3 (-7), t3 -20 (-27), t5 -7 (-34)
    expected = [
        (transfer_id("t5"), bob, -7, -34),
        (transfer_id("t3"), carol, -20, -27),
        (transfer_id("t2"), bob, 3, -7),
        (transfer_id("t1"), bob, -10, -10),
    ]
    seen: list[tuple[str, str, int, int]] = []
    indexes: list[int] = []
    params: dict[str, int] = {"limit": 3}
    pages = 0
    while True:
        r = await ledger.client.get(f"/accounts/{alice}/statement", params=params, headers=auth("auditor"))
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert page["account"] == alice
        seen += [(line["transfer"], line["counterparty"], line["delta"], line["balance"]) for line in page["lines"]]
        indexes += [line["index"] for line in page["lines"]]
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["lines"][-1]["index"]
        params = {"limit": 3, "before": page["next_before"]}
    assert pages == 2
    assert seen == expected
    assert indexes == sorted(indexes, reverse=True)


async def test_statement_page_that_reaches_the_end_has_no_cursor(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    for n in range(4):
        assert (await ledger.transfer(f"t{n}", alice, bob, 1)).status_code == 201
    first = (await ledger.client.get(f"/accounts/{alice}/statement?limit=2", headers=auth("auditor"))).json()
    second = (
        await ledger.client.get(
            f"/accounts/{alice}/statement?limit=2&before={first['next_before']}", headers=auth("auditor")
        )
    ).json()
    assert [len(first["lines"]), len(second["lines"])] == [2, 2]
    assert second["next_before"] is None
    assert [line["transfer"] for line in first["lines"] + second["lines"]] == [
        transfer_id(f"t{n}") for n in (3, 2, 1, 0)
    ]


async def test_statement_line_of_a_reversal_names_the_transfer_it_reverses(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    original = (await ledger.transfer("t", alice, bob, 15)).json()
    r = await ledger.client.post(f"/transfers/{original['id']}/reversal", json={"key": "r"}, headers=auth("service"))
    assert r.status_code == 201, r.text
    lines = (await ledger.client.get(f"/accounts/{bob}/statement", headers=auth("auditor"))).json()["lines"]
    assert [(line["transfer"], line["delta"], line["reverses"]) for line in lines] == [
        (transfer_id("r"), -15, original["id"]),
        (original["id"], 15, None),
    ]


async def test_balance_can_be_read_as_of_an_earlier_log_size(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    first = (await ledger.transfer("t1", alice, bob, 100)).json()
    second = (await ledger.transfer("t2", alice, bob, 25)).json()

    async def at(size: int | None) -> tuple[int, int]:
        params = {} if size is None else {"at_size": size}
        r = await ledger.client.get(f"/accounts/{alice}", params=params, headers=auth("auditor"))
        assert r.status_code == 200, r.text
        return r.json()["balance"], r.json()["as_of_size"]

    assert await at(first["index"]) == (0, first["index"])
    assert await at(first["index"] + 1) == (-100, first["index"] + 1)
    assert await at(second["index"]) == (-100, second["index"])
    assert await at(None) == (-125, second["index"] + 1)


async def test_reading_an_unknown_account_is_not_found(ledger: Ledger) -> None:
    assert_problem(await ledger.client.get(f"/accounts/{UNKNOWN_ACCOUNT}", headers=auth("auditor")), 404)
    assert_problem(await ledger.client.get("/accounts/not-an-id", headers=auth("auditor")), 404)


# ---------------------------------------------------------------------------------------------- limits, closing


async def test_changing_limits_returns_the_account_and_governs_later_transfers(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    r = await ledger.client.put(
        f"/accounts/{alice}/limits", json={"floor": -100, "ceiling": 40}, headers=auth("coordinator")
    )
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["floor"], r.json()["ceiling"]) == (alice, -100, 40)
    assert_problem(await ledger.transfer("t1", alice, bob, 101), 409, "insufficient-hours")
    assert (await ledger.transfer("t2", alice, bob, 100)).status_code == 201
    assert_problem(await ledger.transfer("t3", bob, alice, 141), 409, "insufficient-hours")
    assert (await ledger.transfer("t4", bob, alice, 140)).status_code == 201


async def test_removing_the_ceiling_lifts_it(ledger: Ledger) -> None:
    alice = str((await ledger.open_account("alice"))["id"])
    capped = str((await ledger.open_account("capped", ceiling=10))["id"])
    r = await ledger.client.put(f"/accounts/{capped}/limits", json={"floor": 0}, headers=auth("coordinator"))
    assert (r.status_code, r.json()["ceiling"]) == (200, None)
    assert (await ledger.transfer("t", alice, capped, 500)).status_code == 201


async def test_closing_a_settled_account_closes_it(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    assert (await ledger.transfer("t1", alice, bob, 30)).status_code == 201
    assert (await ledger.transfer("t2", bob, alice, 30)).status_code == 201
    r = await ledger.client.post(f"/accounts/{alice}/close", headers=auth("coordinator"))
    assert r.status_code == 200, r.text
    assert (r.json()["closed"], r.json()["balance"]) == (True, 0)
    before = await log_state(ledger.client)
    assert_problem(await ledger.transfer("t3", bob, alice, 1), 409, "account-closed")
    assert_problem(await ledger.transfer("t4", alice, bob, 1), 409, "account-closed")
    assert_problem(await ledger.client.post(f"/accounts/{alice}/close", headers=auth("coordinator")), 409)
    assert await log_state(ledger.client) == before


async def test_closing_an_account_that_holds_hours_is_refused(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    assert (await ledger.transfer("t1", alice, bob, 30)).status_code == 201
    before = await log_state(ledger.client)
    for account in (alice, bob):
        r = await ledger.client.post(f"/accounts/{account}/close", headers=auth("coordinator"))
        assert_problem(r, 409, "conflict")
    assert await log_state(ledger.client) == before
    r = await ledger.client.get(f"/accounts/{bob}", headers=auth("auditor"))
    assert r.json()["closed"] is False


# ---------------------------------------------------------------------------------------------- reversals


async def test_reversal_moves_the_minutes_back_and_names_the_original(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    original = (await ledger.transfer("t", alice, bob, 45)).json()
    r = await ledger.client.post(f"/transfers/{original['id']}/reversal", json={"key": "r"}, headers=auth("service"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["payer"], body["payee"], body["minutes"], body["reverses"]) == (bob, alice, 45, original["id"])
    assert (body["index"], body["replayed"]) == (original["index"] + 1, False)
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (0, 0)


async def test_reversal_with_the_same_key_replays_it(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    original = (await ledger.transfer("t", alice, bob, 45)).json()
    path = f"/transfers/{original['id']}/reversal"
    first = await ledger.client.post(path, json={"key": "r"}, headers=auth("service"))
    before = await log_state(ledger.client)
    again = await ledger.client.post(path, json={"key": "r"}, headers=auth("service"))
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "replayed": True}
    assert await log_state(ledger.client) == before


async def test_reversing_twice_is_a_conflict(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    original = (await ledger.transfer("t", alice, bob, 45)).json()
    path = f"/transfers/{original['id']}/reversal"
    assert (await ledger.client.post(path, json={"key": "r1"}, headers=auth("service"))).status_code == 201
    before = await log_state(ledger.client)
    body = assert_problem(await ledger.client.post(path, json={"key": "r2"}, headers=auth("service")), 409)
    assert body["extra"] == {"reversed_by": transfer_id("r1")}
    assert await log_state(ledger.client) == before
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (0, 0)


@pytest.mark.parametrize("transfer", [UNKNOWN_TRANSFER, "tr_nope"])
async def test_reversing_an_unknown_transfer_is_not_found(ledger: Ledger, transfer: str) -> None:
    await pair(ledger)
    before = await log_state(ledger.client)
    r = await ledger.client.post(f"/transfers/{transfer}/reversal", json={"key": "r"}, headers=auth("service"))
    assert_problem(r, 404)
    assert await log_state(ledger.client) == before


# ---------------------------------------------------------------------------------------------- bad input

BIG = "x" * (65 * 1024)

# (method, path, json body or raw bytes, expected status); {alice}, {bob} and {transfer} are filled in.
BAD_REQUESTS = [
    pytest.param("POST", "/transfers", b'{"key": "t9", "payer": ', 400, id="malformed-json"),
    pytest.param("POST", "/transfers", b"[1, 2, 3]", 400, id="json-array"),
    pytest.param("POST", "/transfers", b"", 400, id="empty-body"),
    pytest.param("POST", "/accounts", b"{not json}", 400, id="open-malformed-json"),
    pytest.param("POST", "/accounts", {"key": "k", "colour": "blue"}, 400, id="open-unknown-field"),
    pytest.param("POST", "/accounts", {"key": "k", "kind": "admin"}, 400, id="open-unknown-kind"),
    pytest.param("POST", "/accounts", {"key": "k", "floor": 10}, 400, id="open-positive-floor"),
    pytest.param("POST", "/accounts", {"key": "k", "ceiling": -1}, 400, id="open-negative-ceiling"),
    pytest.param("POST", "/accounts", {"key": ""}, 400, id="open-empty-key"),
    pytest.param("POST", "/accounts", {}, 400, id="open-missing-key"),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 5, "note": "hi"},
        400,
        id="transfer-unknown-field",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": "5"},
        400,
        id="minutes-as-string",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 5.5},
        400,
        id="minutes-fraction",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": True},
        400,
        id="minutes-bool",
    ),
    pytest.param(
        "POST", "/transfers", {"key": 9, "payer": "{alice}", "payee": "{bob}", "minutes": 5}, 400, id="key-as-number"
    ),
    pytest.param("POST", "/transfers", {"payer": "{alice}", "payee": "{bob}", "minutes": 5}, 400, id="missing-key"),
    pytest.param(
        "POST", "/transfers", {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 0}, 400, id="zero-minutes"
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": -5},
        400,
        id="negative-minutes",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 60_001},
        400,
        id="minutes-over-limit",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 10**30},
        400,
        id="huge-minutes",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "k" * 201, "payer": "{alice}", "payee": "{bob}", "minutes": 5},
        400,
        id="key-too-long",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 5, "memo_digest": "zz"},
        400,
        id="memo-digest-not-hex",
    ),
    pytest.param(
        "POST", "/transfers", {"key": "t9", "payer": "alice", "payee": "{bob}", "minutes": 5}, 400, id="malformed-payer"
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": UNKNOWN_ACCOUNT, "payee": "{bob}", "minutes": 5},
        404,
        id="unknown-payer",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": UNKNOWN_ACCOUNT, "minutes": 5},
        404,
        id="unknown-payee",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": "t9", "payer": "{alice}", "payee": "{alice}", "minutes": 5},
        422,
        id="self-transfer",
    ),
    pytest.param(
        "POST",
        "/transfers",
        {"key": BIG, "payer": "{alice}", "payee": "{bob}", "minutes": 5},
        413,
        id="transfer-body-over-64k",
    ),
    pytest.param("POST", "/accounts", {"key": BIG}, 413, id="open-body-over-64k"),
    pytest.param("PUT", "/accounts/{alice}/limits", {"floor": -10, "extra": 1}, 400, id="limits-unknown-field"),
    pytest.param("PUT", "/accounts/{alice}/limits", {"floor": 5}, 400, id="limits-positive-floor"),
    pytest.param("PUT", "/accounts/{alice}/limits", {"floor": -10, "ceiling": -5}, 400, id="limits-negative-ceiling"),
    pytest.param("PUT", "/accounts/{alice}/limits", {"ceiling": 5}, 400, id="limits-missing-floor"),
    pytest.param("PUT", "/accounts/{alice}/limits", b"{", 400, id="limits-malformed-json"),
    pytest.param("PUT", f"/accounts/{UNKNOWN_ACCOUNT}/limits", {"floor": -10}, 404, id="limits-unknown-account"),
    pytest.param("PUT", "/accounts/bogus/limits", {"floor": -10}, 404, id="limits-malformed-account"),
    pytest.param("POST", f"/accounts/{UNKNOWN_ACCOUNT}/close", None, 404, id="close-unknown-account"),
    pytest.param(
        "POST",
        "/transfers/{transfer}/reversal",
        {"key": "r", "transfer": "{transfer}"},
        400,
        id="reversal-unknown-field",
    ),
    pytest.param("POST", "/transfers/{transfer}/reversal", {}, 400, id="reversal-missing-key"),
    pytest.param("POST", "/transfers/{transfer}/reversal", {"key": BIG}, 413, id="reversal-body-over-64k"),
    pytest.param("POST", f"/transfers/{UNKNOWN_TRANSFER}/reversal", {"key": "r"}, 404, id="reversal-unknown-transfer"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    BAD_REQUESTS,
)
async def test_bad_write_gets_a_problem_and_leaves_the_log_unchanged(
    ledger: Ledger, method: str, path: str, body: Any, status: int
) -> None:
    alice, bob = await pair(ledger)
    transfer = (await ledger.transfer("t1", alice, bob, 10)).json()["id"]
    names = {"alice": alice, "bob": bob, "transfer": transfer}
    before = await log_state(ledger.client)
    headers = {**auth("coordinator"), "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(_fill(body, names)).encode()
    r = await ledger.client.request(method, _fill(path, names), content=content, headers=headers)
    assert_problem(r, status)
    assert await log_state(ledger.client) == before
    assert (await ledger.balance(alice), await ledger.balance(bob)) == (-10, 10)


@pytest.mark.parametrize(
    "query", ["at_size=-1", "at_size=abc", "at_size=1.5"], ids=["negative", "not-a-number", "fraction"]
)
async def test_bad_account_query_gets_a_problem(ledger: Ledger, query: str) -> None:
    alice, _ = await pair(ledger)
    assert_problem(await ledger.client.get(f"/accounts/{alice}?{query}", headers=auth("auditor")), 400)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "before=-1"])
async def test_bad_statement_query_gets_a_problem(ledger: Ledger, query: str) -> None:
    alice, _ = await pair(ledger)
    assert_problem(await ledger.client.get(f"/accounts/{alice}/statement?{query}", headers=auth("auditor")), 400)


# ---------------------------------------------------------------------------------------------- authorization

# (method, path, body) of every write; {alice}, {bob}, {transfer} are filled in.
WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/accounts", {"key": "new"}),
    ("POST", "/transfers", {"key": "t9", "payer": "{alice}", "payee": "{bob}", "minutes": 5}),
    ("PUT", "/accounts/{alice}/limits", {"floor": -60}),
    ("POST", "/accounts/{carol}/close", None),
    ("POST", "/transfers/{transfer}/reversal", {"key": "r"}),
]
WRITE_IDS = ["open", "transfer", "limits", "close", "reverse"]


async def _write_setup(ledger: Ledger) -> tuple[dict[str, str], dict[str, Any]]:
    alice = await ledger.open_account("alice")
    bob = await ledger.open_account("bob")
    carol = await ledger.open_account("carol")
    transfer = (await ledger.transfer("t1", str(alice["id"]), str(bob["id"]), 10)).json()["id"]
    names = {"alice": str(alice["id"]), "bob": str(bob["id"]), "carol": str(carol["id"]), "transfer": transfer}
    return names, alice


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 401), ("bad-token", 401), ("not-bearer", 401), ("auditor", 403), ("owner", 403)],
)
async def test_write_without_a_writer_token_is_refused(
    ledger: Ledger, method: str, path: str, body: dict[str, Any] | None, who: str, status: int
) -> None:
    names, alice = await _write_setup(ledger)
    headers = {
        "anonymous": {},
        "bad-token": {"Authorization": "Bearer not-a-token"},
        "not-bearer": {"Authorization": f"Basic {base64.b64encode(b'coordinator:coord-secret').decode()}"},
        "auditor": auth("auditor"),
        "owner": owner(alice),
    }[who]
    before = await log_state(ledger.client)
    r = await ledger.client.request(method, _fill(path, names), json=_fill(body, names), headers=headers)
    assert_problem(r, status)
    assert await log_state(ledger.client) == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("role", ["coordinator", "service"])
async def test_coordinator_and_service_tokens_may_write(
    ledger: Ledger, method: str, path: str, body: dict[str, Any] | None, role: str
) -> None:
    names, _ = await _write_setup(ledger)
    before = await log_state(ledger.client)
    r = await ledger.client.request(method, _fill(path, names), json=_fill(body, names), headers=auth(role))
    assert r.status_code in (200, 201), r.text
    after = await log_state(ledger.client)
    assert after[0] == before[0] + 1
    assert after[2][: before[0]] == before[2]


@pytest.mark.parametrize("suffix", ["", "/statement"])
async def test_reading_an_account_anonymously_is_unauthorized(ledger: Ledger, suffix: str) -> None:
    alice, _ = await pair(ledger)
    assert_problem(await ledger.client.get(f"/accounts/{alice}{suffix}"), 401)


@pytest.mark.parametrize("suffix", ["", "/statement"])
async def test_owner_token_reads_its_own_account(ledger: Ledger, suffix: str) -> None:
    alice = await ledger.open_account("alice")
    r = await ledger.client.get(f"/accounts/{alice['id']}{suffix}", headers=owner(alice))
    assert r.status_code == 200, r.text
    assert r.json()["id" if not suffix else "account"] == alice["id"]


@pytest.mark.parametrize("suffix", ["", "/statement"])
async def test_owner_token_is_forbidden_on_another_account(ledger: Ledger, suffix: str) -> None:
    alice = await ledger.open_account("alice")
    bob = await ledger.open_account("bob")
    assert_problem(await ledger.client.get(f"/accounts/{bob['id']}{suffix}", headers=owner(alice)), 403)


async def test_every_owner_token_reads_its_own_account(ledger: Ledger) -> None:
    """Owner tokens are opaque strings: whatever characters one happens to contain, it must work."""
    for n in range(40):
        account = await ledger.open_account(f"member-{n}")
        token = str(account["owner_token"])
        r = await ledger.client.get(f"/accounts/{account['id']}", headers=owner(account))
        assert r.status_code == 200, (token, r.text)


async def test_owner_token_from_the_replayed_open_is_the_same(ledger: Ledger) -> None:
    first = await ledger.open_account("alice")
    again = await ledger.open_account("alice")
    assert again["owner_token"] == first["owner_token"]


async def test_forged_owner_token_is_unauthorized(ledger: Ledger) -> None:
    alice = await ledger.open_account("alice")
    forged = f"own_{alice['id']}_" + base64.urlsafe_b64encode(b"\x00" * 24).decode()
    r = await ledger.client.get(f"/accounts/{alice['id']}", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(r, 401)


@pytest.mark.parametrize("role", ["auditor", "coordinator", "service"])
async def test_staff_tokens_read_any_account(ledger: Ledger, role: str) -> None:
    alice, _ = await pair(ledger)
    for suffix in ("", "/statement"):
        r = await ledger.client.get(f"/accounts/{alice}{suffix}", headers=auth(role))
        assert r.status_code == 200, r.text


async def test_listing_all_balances_needs_no_token(ledger: Ledger) -> None:
    alice = await ledger.open_account("alice")
    bob = await ledger.open_account("bob")
    assert (await ledger.transfer("t", str(alice["id"]), str(bob["id"]), 5)).status_code == 201
    r = await ledger.client.get("/log/balances")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == len(await entries(ledger.client))
    assert sorted((a["id"], a["balance"]) for a in body["accounts"] if a["balance"]) == sorted(
        [(alice["id"], -5), (bob["id"], 5)]
    )


async def test_log_endpoints_need_no_token(ledger: Ledger) -> None:
    alice, bob = await pair(ledger)
    assert (await ledger.transfer("t", alice, bob, 5)).status_code == 201
    for path in (
        "/log/checkpoint",
        "/log/entries",
        "/log/proof/inclusion?index=1&size=3",
        "/log/proof/consistency?old=1&new=3",
        "/log/proof/bundle?index=2",
        "/log/tile/0/000.p/3",
        "/log/tile/entries/000.p/3",
    ):
        r = await ledger.client.get(path)
        assert r.status_code == 200, (path, r.text)


async def test_problem_responses_never_leak_a_server_error_for_bad_json_types(ledger: Ledger) -> None:
    """A body that is valid JSON of the wrong shape is the caller's mistake: 400, never 500."""
    for body in ("null", '"text"', "42", '{"key": {"nested": 1}}'):
        r = await ledger.client.post(
            "/accounts", content=body.encode(), headers={**auth("coordinator"), "Content-Type": "application/json"}
        )
        assert_problem(r, 400)
    assert await entries(ledger.client) == []


def test_problem_helper_rejects_plain_json() -> None:
    """assert_problem is strict: it is what makes the refusal tests above meaningful."""
    import httpx

    plain = httpx.Response(400, json={"type": "x", "title": "y", "status": 400})
    with pytest.raises(AssertionError):
        assert_problem(plain, 400)
    missing = httpx.Response(
        400,
        content=msgspec.json.encode({"title": "y", "status": 400}),
        headers={"content-type": "application/problem+json"},
    )
    with pytest.raises(AssertionError):
        assert_problem(missing, 400)


@pytest.mark.parametrize("key", ["nul\x00key", "line\nbreak", "bell\x07"])
async def test_keys_with_control_characters_are_refused_and_nothing_is_written(ledger: Ledger, key: str) -> None:
    before = (await ledger.client.get("/log/entries")).json()["entries"]
    r = await ledger.client.post("/accounts", json={"key": key}, headers=auth("coordinator"))
    assert_problem(r, 400)
    assert (await ledger.client.get("/log/entries")).json()["entries"] == before
    # The ledger is unharmed: the next, valid request goes through.
    r = await ledger.client.post("/accounts", json={"key": "plain"}, headers=auth("coordinator"))
    assert r.status_code == 201, r.text
