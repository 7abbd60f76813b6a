"""Joining the exchange: applying and being approved (or rejected), joining by a coordinator's invitation, and the
ledger account that approval opens, once."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets

import httpx
from litestar.testing import AsyncTestClient

from services.exchange.app import create_app
from tests.exchange.support import COORDINATOR, PASSWORD, Exchange, exchange_settings
from tests.ledger.conftest import TOKENS


def joiner(name: str, **fields: object) -> dict[str, object]:
    email = f"{name.lower()}.{secrets.token_hex(3)}@example.org"
    return {"name": name, "email": email, "password": PASSWORD, **fields}


async def test_an_applicant_waits_in_the_coordinators_list_until_approved(exchange: Exchange) -> None:
    applicant, email = await exchange.apply("Cleo", skills=["sewing", "Spanish"], area="Riverside")

    pending = await exchange.call("GET", "/api/members?status=pending")
    assert [(m["id"], m["name"], m["email"], m["status"]) for m in pending] == [(applicant, "Cleo", email, "pending")]
    assert pending[0]["skills"] == ["sewing", "Spanish"]
    assert pending[0]["area"] == "Riverside"
    assert pending[0]["account"] is None

    approved = await exchange.call("POST", f"/api/members/{applicant}/approval")
    assert approved["status"] == "approved"
    assert approved["approved_at"] is not None
    assert await exchange.call("GET", "/api/members?status=pending") == []
    assert [m["id"] for m in await exchange.call("GET", "/api/members?status=approved")] == [applicant]


async def test_approval_opens_the_members_ledger_account(exchange: Exchange) -> None:
    applicant, email = await exchange.apply("Dev")
    await exchange.call("POST", f"/api/members/{applicant}/approval")
    token = (await exchange.sign_in(email)).json()["token"]
    me = {"Authorization": f"Bearer {token}"}

    async def account() -> str | None:
        return (await exchange.client.get("/api/me", headers=me)).json()["account"]  # type: ignore[no-any-return]

    opened = await exchange.until(account, lambda a: a is not None, "the ledger account")
    on_ledger = await exchange.ledger(f"/accounts/{opened}")
    assert (on_ledger["kind"], on_ledger["balance"], on_ledger["closed"]) == ("member", 0, False)
    assert (await exchange.client.get("/api/me/balance", headers=me)).json()["balance"] == 0


async def test_approving_a_member_twice_or_at_once_opens_exactly_one_ledger_account(
    served_exchange: Exchange,
) -> None:
    exchange = served_exchange  # over real HTTP, so that the approvals below do race
    await exchange.pot_account()  # the pot's own opening is not this test's business
    size_before = await exchange.ledger_size()
    applicant, _ = await exchange.apply("Eli")

    answers = await asyncio.gather(
        *[exchange.client.post(f"/api/members/{applicant}/approval", headers=COORDINATOR) for _ in range(6)]
    )
    assert [r.status_code for r in answers] == [200] * 6
    await exchange.call("POST", f"/api/members/{applicant}/approval")

    async def account() -> str | None:
        return (await exchange.call("GET", f"/api/members/{applicant}"))["account"]  # type: ignore[no-any-return]

    opened = await exchange.until(account, lambda a: a is not None, "the ledger account")
    async with exchange.db() as conn:
        types = [
            r["type"]
            for r in await conn.fetch("SELECT type FROM exchange.events WHERE stream = $1 ORDER BY version", applicant)
        ]
    assert types == ["exchange.member.applied.v1", "exchange.member.approved.v1", "exchange.member.account.v1"]

    # On the ledger itself: the log grew by one member account, this one, and its key names no other.
    size_after = await exchange.ledger_size()
    entries = (await exchange.ledger("/log/entries", start=size_before, end=size_after))["entries"]
    opened_entries = [json.loads(base64.b64decode(e["data"])) for e in entries]
    members_opened = [e["account"] for e in opened_entries if e["type"] == "ledger.account.opened.v1"]
    assert members_opened == [opened]
    async with httpx.AsyncClient(base_url=exchange.app.state.ledger.base_url) as ledger:
        again = await ledger.post(
            "/accounts", json={"key": f"exchange/{applicant}"}, headers={"Authorization": f"Bearer {TOKENS['service']}"}
        )
    assert (again.status_code, again.json()["id"]) == (200, opened)


async def test_a_rejected_applicant_cannot_sign_in(exchange: Exchange) -> None:
    applicant, email = await exchange.apply("Fay")
    rejected = await exchange.call("POST", f"/api/members/{applicant}/rejection")
    assert rejected["status"] == "rejected"

    r = await exchange.sign_in(email)
    assert r.status_code == 403
    assert "rejected" in r.json()["detail"]
    # Nor can the rejection be turned into an approval afterwards.
    assert await exchange.refused("POST", f"/api/members/{applicant}/approval") == 409


async def test_a_coordinators_invitation_link_lets_a_newcomer_join_approved_with_an_account(
    exchange: Exchange,
) -> None:
    invitation = await exchange.call("POST", "/api/invitations", json={})
    assert invitation["token"].startswith("join_")
    assert invitation["link"] == f"/join/{invitation['token']}"

    body = joiner("Gus", token=invitation["token"], skills=["cooking"])
    joined = await exchange.client.post("/api/invitations/join", json=body)
    assert joined.status_code == 201, joined.text
    assert joined.json()["status"] == "approved"

    token = (await exchange.sign_in(str(body["email"]))).json()["token"]
    me = {"Authorization": f"Bearer {token}"}

    async def account() -> str | None:
        return (await exchange.client.get("/api/me", headers=me)).json()["account"]  # type: ignore[no-any-return]

    assert await exchange.until(account, lambda a: a is not None, "the ledger account")
    view = (await exchange.client.get("/api/me", headers=me)).json()
    assert (view["status"], view["role"], view["skills"]) == ("approved", "member", ["cooking"])


async def test_an_invitation_can_make_a_coordinator(exchange: Exchange) -> None:
    invitation = await exchange.call("POST", "/api/invitations", json={"role": "coordinator"})
    body = joiner("Hana", token=invitation["token"])
    assert (await exchange.client.post("/api/invitations/join", json=body)).status_code == 201
    token = (await exchange.sign_in(str(body["email"]))).json()["token"]

    pending = await exchange.client.get("/api/members", headers={"Authorization": f"Bearer {token}"})
    assert pending.status_code == 200


async def test_an_invitation_link_works_only_once(exchange: Exchange) -> None:
    invitation = await exchange.call("POST", "/api/invitations", json={})
    first = await exchange.client.post("/api/invitations/join", json=joiner("Ivo", token=invitation["token"]))
    assert first.status_code == 201
    events = await exchange.event_count()

    second = await exchange.client.post("/api/invitations/join", json=joiner("Jun", token=invitation["token"]))
    assert second.status_code == 409
    assert second.headers["content-type"].startswith("application/problem+json")
    assert "already been used" in second.json()["detail"]
    assert await exchange.event_count() == events


async def test_an_unknown_invitation_link_is_refused(exchange: Exchange) -> None:
    events = await exchange.event_count()
    r = await exchange.client.post("/api/invitations/join", json=joiner("Kit", token="join_not-a-real-token"))
    assert r.status_code == 404
    assert r.json()["status"] == 404
    assert await exchange.event_count() == events


async def test_an_expired_invitation_link_is_refused(ledger_url: str, database_url: str) -> None:
    settings = exchange_settings(invitation_days=0)  # every invitation has expired by the time it is used
    async with AsyncTestClient(app=create_app(settings, database_url=database_url, ledger_url=ledger_url)) as client:
        made = await client.post("/api/invitations", json={}, headers=COORDINATOR)
        assert made.status_code == 201
        body = joiner("Lou", token=made.json()["token"])
        r = await client.post("/api/invitations/join", json=body)
        assert r.status_code == 409
        assert "expired" in r.json()["detail"]
        signing_in = await client.post("/api/sessions", json={"email": body["email"], "password": PASSWORD})
        assert signing_in.status_code == 401


async def test_only_a_coordinator_makes_invitations(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    assert await exchange.refused("POST", "/api/invitations", ada, json={}) == 403
    r = await exchange.client.post("/api/invitations", json={})
    assert r.status_code == 401


async def test_an_email_address_can_apply_only_once(exchange: Exchange) -> None:
    _, email = await exchange.apply("Mia")
    events = await exchange.event_count()
    again = await exchange.client.post(
        "/api/applications", json={"name": "Mia again", "email": email.upper(), "password": PASSWORD}
    )
    assert again.status_code == 409
    # The read model refused the address, and the event appended in the same transaction went with it.
    assert await exchange.event_count() == events
    assert [m["name"] for m in await exchange.call("GET", "/api/members?status=pending")] == ["Mia"]


async def test_a_member_edits_their_own_profile_and_others_see_it(exchange: Exchange) -> None:
    ada = await exchange.member("Ada", skills=["bikes"], area="Riverside")
    ben = await exchange.member("Ben")
    updated = await exchange.call("PATCH", "/api/me", ada, json={"skills": ["bikes", "baking"], "bio": "Ask me."})
    assert (updated["name"], updated["skills"], updated["area"], updated["bio"]) == (
        "Ada",
        ["bikes", "baking"],
        "Riverside",
        "Ask me.",
    )
    seen = await exchange.call("GET", f"/api/members/{ada.id}", ben)
    assert seen == {"id": ada.id, "name": "Ada", "skills": ["bikes", "baking"], "area": "Riverside", "bio": "Ask me."}
