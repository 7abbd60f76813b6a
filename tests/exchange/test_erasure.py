"""Erasure on request: a member's personal data goes for good (read models, API, and the sealed events, whose key
is deleted), while the ledger keeps its pseudonymous entries and every balance as it was."""

from __future__ import annotations

from typing import Any

from services.exchange import events as ev
from services.exchange.vault import Vault
from tests.exchange.support import PASSWORD, Exchange, Member

# What Ada tells the exchange about herself, her offer and her trades; none of it may survive her erasure.
NAME, SKILLS, AREA, BIO = "Ada Quillfeather", ["penny-farthing restoration"], "Quillfeather Lane", "Ring twice."
TITLE, DESCRIPTION = "Quillfeather bike clinic", "Brakes and gears at Quillfeather's shed."
MEMO, THANKS, NOTE = "Quillfeather fixed the brakes", "thanks for the Quillfeather lesson", "Sat at Quillfeather's?"


async def trader(exchange: Exchange) -> tuple[Member, Member, dict[str, str]]:
    """Ada, with a profile, an offer, a settled exchange and a payment with Ben, and an open proposal from him."""
    ada = await exchange.member(NAME, skills=SKILLS, area=AREA, bio=BIO)
    ben = await exchange.member("Ben", area="Riverside")
    listing = await exchange.publish(ada, TITLE, DESCRIPTION)
    traded = await exchange.trade(ada, ben, 60, memo=MEMO)
    paid = await exchange.call("POST", "/api/payments", ada, json={"to": ben.id, "minutes": 15, "memo": THANKS})
    proposal = await exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"], "note": NOTE})
    # A mistyped password leaves Ada's email in the sign-in limiter's records.
    assert (await exchange.sign_in(ada.email, "not the password")).status_code == 401
    await exchange.exchange_status(traded, ben, "completed")
    await exchange.outbox_idle()
    ids = {"listing": listing["id"], "traded": traded, "payment": paid["id"], "proposal": proposal["id"]}
    return ada, ben, ids


def clear_texts(ada: Member) -> list[str]:
    return [ada.email, "Quillfeather", "penny-farthing"]


async def everything_stored(exchange: Exchange) -> str:
    """Every row of every table in the exchange's schema, as text: what a copy of its database would reveal."""
    async with exchange.db() as conn:
        tables = [
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'exchange'"
            )
        ]
        dump = []
        for table in tables:
            for row in await conn.fetch(f'SELECT * FROM exchange."{table}"'):
                dump.append(repr(dict(row)))
    return "\n".join(dump)


async def ledger_state(exchange: Exchange, *accounts: str) -> dict[str, Any]:
    return {
        "size": await exchange.ledger_size(),
        "balances": await exchange.ledger("/log/balances"),
        **{account: await exchange.ledger_lines(account) for account in accounts},
    }


async def test_erasure_makes_a_members_personal_data_unreadable_everywhere_in_the_exchange(
    exchange: Exchange,
) -> None:
    ada, _, _ = await trader(exchange)
    before = await everything_stored(exchange)
    assert all(text in before for text in clear_texts(ada))  # the read models held them, in clear

    erased = await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)
    assert (erased["status"], erased["name"], erased["email"], erased["skills"], erased["area"], erased["bio"]) == (
        "erased",
        "",
        None,
        [],
        "",
        "",
    )

    after = await everything_stored(exchange)
    for text in clear_texts(ada):
        assert text not in after, f"{text!r} is still stored"


async def test_after_erasure_the_api_shows_nothing_personal_of_the_member(exchange: Exchange) -> None:
    ada, ben, ids = await trader(exchange)
    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)

    view = await exchange.call("GET", f"/api/members/{ada.id}")
    assert (view["status"], view["name"], view["email"], view["account"]) == ("erased", "", None, ada.account)
    assert await exchange.refused("GET", f"/api/members/{ada.id}", ben) == 404
    assert await exchange.refused("GET", f"/api/listings/{ids['listing']}", ben) == 404
    assert (await exchange.call("GET", "/api/listings?q=Quillfeather", ben))["items"] == []

    traded = await exchange.call("GET", f"/api/exchanges/{ids['traded']}", ben)
    assert (traded["status"], traded["memo"], traded["lines"][0]["minutes"]) == ("completed", None, 60)
    assert (await exchange.call("GET", f"/api/exchanges/{ids['proposal']}", ben))["note"] is None
    assert (await exchange.call("GET", f"/api/payments/{ids['payment']}", ben))["memo"] is None
    statement = await exchange.call("GET", "/api/me/statement", ben)
    assert sorted(e["delta"] for e in statement["entries"]) == [-60, 15]
    assert [e["memo"] for e in statement["entries"]] == [None, None]

    # Ben's own data is his, and stays.
    assert (await exchange.call("GET", "/api/me", ben))["name"] == "Ben"


async def test_an_erased_member_can_no_longer_sign_in_or_use_a_token(exchange: Exchange) -> None:
    ada, _, _ = await trader(exchange)
    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)
    assert (await exchange.client.get("/api/me", headers=ada.headers)).status_code == 401
    assert (await exchange.sign_in(ada.email, PASSWORD)).status_code == 401


async def test_erasure_deletes_the_key_so_the_stored_events_can_never_be_opened_again(exchange: Exchange) -> None:
    ada, _, ids = await trader(exchange)
    subjects = [ada.id, ids["traded"], ids["payment"], ids["proposal"]]
    async with exchange.db() as conn:
        assert await conn.fetchval("SELECT count(*) FROM exchange.subject_keys WHERE subject = ANY($1)", subjects) == 4

    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)

    async with exchange.db() as conn:
        assert await conn.fetchval("SELECT count(*) FROM exchange.subject_keys WHERE subject = ANY($1)", subjects) == 0
        rows = await conn.fetch(
            "SELECT data FROM exchange.events WHERE stream = ANY($1) ORDER BY seq", [*subjects, ids["listing"]]
        )
        raw = b"".join(r["data"] for r in rows)
        sealed = [s for e in (ev.decoder.decode(r["data"]) for r in rows) for s in _sealed(e)]
        vault = Vault(conn)
        opened = [await vault.open(s, ev.Note) for s in sealed]
    for text in clear_texts(ada):
        assert text.encode() not in raw
    assert {s.subject for s in sealed} == set(subjects)
    # Her details, her offer's text, the exchange's memo, the payment's memo and Ben's note to her.
    assert len(sealed) == 5
    assert opened == [None] * len(sealed)


def _sealed(event: ev.AnyEvent) -> list[ev.Sealed]:
    return [value for value in (getattr(event, f) for f in event.__struct_fields__) if isinstance(value, ev.Sealed)]


async def test_erasure_leaves_the_ledger_and_every_balance_as_they_were(exchange: Exchange) -> None:
    ada, ben, _ = await trader(exchange)
    assert ada.account is not None
    assert ben.account is not None
    before = await ledger_state(exchange, ada.account, ben.account)
    assert await exchange.ledger_balance(ada.account) == 60 - 15

    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)
    await exchange.outbox_idle()

    assert await ledger_state(exchange, ada.account, ben.account) == before
    assert await exchange.ledger_balance(ada.account) == 45
    assert await exchange.balance(ben) == -45
    balances = (await exchange.ledger("/log/balances"))["accounts"]
    assert sum(b["balance"] for b in balances) == 0


async def test_a_coordinator_may_erase_a_member_and_a_member_only_themselves(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    events = await exchange.event_count()
    assert await exchange.refused("POST", f"/api/members/{ada.id}/erasure", ben) == 403
    assert (await exchange.call("GET", f"/api/members/{ada.id}"))["name"] == "Ada"
    assert await exchange.event_count() == events

    assert (await exchange.call("POST", f"/api/members/{ada.id}/erasure"))["status"] == "erased"
    assert (await exchange.call("GET", f"/api/members/{ada.id}"))["name"] == ""


async def test_erasing_twice_changes_nothing_more(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    await exchange.call("POST", f"/api/members/{ada.id}/erasure")
    events = await exchange.event_count()
    assert (await exchange.call("POST", f"/api/members/{ada.id}/erasure"))["status"] == "erased"
    assert await exchange.event_count() == events


async def test_an_erased_members_email_address_may_apply_again_as_someone_new(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)
    again = await exchange.client.post(
        "/api/applications", json={"name": "Ada", "email": ada.email, "password": PASSWORD}
    )
    assert again.status_code == 201
    assert again.json()["id"] != ada.id


async def test_a_sign_in_attempt_after_erasure_leaves_the_email_nowhere_in_clear(exchange: Exchange) -> None:
    ada, _, _ = await trader(exchange)
    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)
    assert (await exchange.sign_in(ada.email, "a guess at the password")).status_code == 401
    assert (await exchange.sign_in(ada.email.upper(), "another guess")).status_code == 401
    async with exchange.db() as conn:
        by_email = "SELECT count(*) FROM exchange.login_failures WHERE key LIKE 'email:%'"
        assert await conn.fetchval(by_email) == 2  # counted, for the limit
    stored = await everything_stored(exchange)
    assert ada.email not in stored
    assert ada.email.lower() not in stored.lower()


async def test_failed_sign_ins_still_count_by_email_without_keeping_it(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    for _ in range(5):
        assert (await exchange.sign_in(ada.email, "not the password")).status_code == 401
    assert (await exchange.sign_in(ada.email.upper(), PASSWORD)).status_code == 429
    async with exchange.db() as conn:
        keys = [r["key"] for r in await conn.fetch("SELECT key FROM exchange.login_failures")]
    assert len(keys) == 10
    assert not [key for key in keys if ada.email.lower() in key.lower()], keys


async def test_erasure_forgets_the_members_failed_sign_ins(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    for _ in range(5):
        assert (await exchange.sign_in(ada.email, "not the password")).status_code == 401
    await exchange.call("POST", f"/api/members/{ada.id}/erasure")
    async with exchange.db() as conn:
        # The ones by address stay (they are not the member's); the ones by email went with the member.
        assert await conn.fetchval("SELECT count(*) FROM exchange.login_failures WHERE key LIKE 'email:%'") == 0
        assert await conn.fetchval("SELECT count(*) FROM exchange.login_failures WHERE key LIKE 'ip:%'") == 5


# Every table and index whose rows hold a member's personal data in clear, or the data keys erasure shreds.
ERASED_FROM = (
    "exchange.subject_keys",
    "exchange.members",
    "exchange.listings",
    "exchange.exchanges",
    "exchange.exchange_lines",
    "exchange.payments",
)


async def test_erasure_leaves_no_old_row_version_holding_the_data_or_its_key(exchange: Exchange) -> None:
    """Not even in dead row versions or index entries, which a copy of the database files would reveal."""
    ada, _, _ = await trader(exchange)
    async with exchange.db() as conn:
        key = await conn.fetchval("SELECT key FROM exchange.subject_keys WHERE subject = $1", ada.id)
    await exchange.call("POST", f"/api/members/{ada.id}/erasure", ada)
    async with exchange.db() as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        relations = [
            r["oid"]
            for r in await conn.fetch(
                "SELECT c.oid::regclass::text AS oid FROM pg_class c WHERE c.oid = ANY($1::regclass[])"
                " UNION SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = ANY($1::regclass[])",
                list(ERASED_FROM),
            )
        ]
        found = []
        for relation in relations:
            blocks = await conn.fetchval(
                "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int", relation
            )
            for block in range(blocks):
                page = await conn.fetchval("SELECT get_raw_page($1, $2::int)", relation, block)
                found += [
                    (relation, text)
                    for text in [*clear_texts(ada), key]
                    if (text if isinstance(text, bytes) else text.encode()) in page
                ]
    assert not found, found
