"""Who may do what: passwords, browser sessions with CSRF protection, API tokens, signing out, roles, and the
limit on failed sign-ins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie

from argon2 import PasswordHasher

from services.exchange.auth import SESSION_COOKIE
from tests.exchange.support import PASSWORD, Exchange

OFFER = {"kind": "offer", "category": "tutoring", "title": "Maths tutoring", "description": "GCSE level."}


async def browser_session(exchange: Exchange, email: str) -> tuple[dict[str, str], str, SimpleCookie]:
    """Sign in as a browser does; returns the Cookie header to send back, the CSRF token and the cookie as set.

    The test client's own cookie jar is emptied, so that every later request says exactly which cookie it sends.
    """
    r = await exchange.sign_in(email, kind="cookie")
    assert r.status_code == 201, r.text
    exchange.client.cookies.clear()
    cookie: SimpleCookie = SimpleCookie(r.headers["set-cookie"])
    return {"Cookie": f"{SESSION_COOKIE}={cookie[SESSION_COOKIE].value}"}, r.json()["csrf_token"], cookie


async def test_passwords_are_stored_only_as_argon2id_hashes(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    async with exchange.db() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM exchange.members WHERE id = $1", ada.id)
        events = b"".join(r["data"] for r in await conn.fetch("SELECT data FROM exchange.events"))
    assert stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, PASSWORD)
    assert PASSWORD.encode() not in events


async def test_a_wrong_password_or_unknown_email_is_refused_alike(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    wrong = await exchange.sign_in(ada.email, "not my password at all")
    unknown = await exchange.sign_in("nobody@example.org")
    assert (wrong.status_code, unknown.status_code) == (401, 401)
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_a_browser_session_cookie_is_httponly_and_samesite_lax(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    _, csrf, cookie = await browser_session(exchange, ada.email)
    morsel = cookie[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/"
    assert csrf
    assert morsel.value.startswith("tbs_")


async def test_a_browser_session_reads_without_a_csrf_token(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    cookie, _, _ = await browser_session(exchange, ada.email)
    r = await exchange.client.get("/api/me", headers=cookie)
    assert (r.status_code, r.json()["id"]) == (200, ada.id)


async def test_a_browser_session_changes_nothing_without_its_csrf_token(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    cookie, csrf, _ = await browser_session(exchange, ada.email)
    events = await exchange.event_count()

    missing = await exchange.client.post("/api/listings", json=OFFER, headers=cookie)
    wrong = await exchange.client.post("/api/listings", json=OFFER, headers={**cookie, "X-CSRF-Token": csrf[:-1]})
    for r in (missing, wrong):
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "CSRF" in r.json()["detail"]
    assert await exchange.event_count() == events

    made = await exchange.client.post("/api/listings", json=OFFER, headers={**cookie, "X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    assert made.json()["title"] == "Maths tutoring"


async def test_another_sessions_csrf_token_does_not_pass(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    cookie, _, _ = await browser_session(exchange, ada.email)
    _, bens_csrf, _ = await browser_session(exchange, ben.email)
    r = await exchange.client.post("/api/listings", json=OFFER, headers={**cookie, "X-CSRF-Token": bens_csrf})
    assert r.status_code == 403


async def test_an_api_token_needs_no_csrf_token(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    assert ada.headers["Authorization"].startswith("Bearer tbk_")
    r = await exchange.client.post("/api/listings", json=OFFER, headers=ada.headers)
    assert r.status_code == 201, r.text


async def test_signing_out_ends_an_api_token(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    other = await exchange.sign_in(ada.email)
    out = await exchange.client.delete("/api/sessions/current", headers=ada.headers)
    assert out.status_code == 204

    assert (await exchange.client.get("/api/me", headers=ada.headers)).status_code == 401
    # Only the token that signed out: Ada's other sign-in still works.
    still = await exchange.client.get("/api/me", headers={"Authorization": f"Bearer {other.json()['token']}"})
    assert still.status_code == 200


async def test_signing_out_ends_a_browser_session(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    cookie, csrf, _ = await browser_session(exchange, ada.email)
    assert (await exchange.client.delete("/api/sessions/current", headers=cookie)).status_code == 403  # no CSRF
    out = await exchange.client.delete("/api/sessions/current", headers={**cookie, "X-CSRF-Token": csrf})
    assert out.status_code == 204
    cleared = SimpleCookie(out.headers["set-cookie"])[SESSION_COOKIE]
    assert cleared.value == ""
    exchange.client.cookies.clear()

    assert (await exchange.client.get("/api/me", headers=cookie)).status_code == 401
    made = await exchange.client.post("/api/listings", json=OFFER, headers={**cookie, "X-CSRF-Token": csrf})
    assert made.status_code == 401


async def test_an_unknown_or_malformed_token_is_refused(exchange: Exchange) -> None:
    for authorization in ("Bearer tbk_made-up", "Basic YWRhOnNlY3JldA==", "Bearer ", "tbk_no-scheme"):
        r = await exchange.client.get("/api/me", headers={"Authorization": authorization})
        assert r.status_code == 401, authorization
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_a_member_can_neither_see_applications_nor_approve_them(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    applicant, _ = await exchange.apply("Cleo")
    assert await exchange.refused("GET", "/api/members?status=pending", ada) == 403
    assert await exchange.refused("POST", f"/api/members/{applicant}/approval", ada) == 403
    assert await exchange.refused("POST", f"/api/members/{applicant}/rejection", ada) == 403
    assert await exchange.refused("PUT", f"/api/members/{ada.id}/role", ada, json={"role": "coordinator"}) == 403
    # And a pending applicant is nobody to other members.
    assert await exchange.refused("GET", f"/api/members/{applicant}", ada) == 404
    assert (await exchange.call("GET", f"/api/members/{applicant}"))["status"] == "pending"


async def test_a_coordinator_makes_a_member_a_coordinator_who_can_then_approve(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    changed = await exchange.call("PUT", f"/api/members/{ada.id}/role", json={"role": "coordinator"})
    assert changed["role"] == "coordinator"

    applicant, _ = await exchange.apply("Cleo")
    assert [m["id"] for m in await exchange.call("GET", "/api/members", ada)] == [applicant]
    assert (await exchange.call("POST", f"/api/members/{applicant}/approval", ada))["status"] == "approved"

    # And back: the same token now carries the member role.
    await exchange.call("PUT", f"/api/members/{ada.id}/role", ada, json={"role": "member"})
    assert await exchange.refused("GET", "/api/members", ada) == 403


async def test_an_auditor_reads_other_members_exchanges_but_approves_nothing(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    eve = await exchange.member("Eve")
    await exchange.call("PUT", f"/api/members/{eve.id}/role", json={"role": "auditor"})
    ex = await exchange.trade(ada, ben, 30, memo="maths")

    assert await exchange.refused("GET", f"/api/exchanges/{ex}", await exchange.member("Dan")) == 404
    seen = await exchange.call("GET", f"/api/exchanges/{ex}", eve)
    assert {p["member"] for p in seen["parties"]} == {ada.id, ben.id}
    assert (await exchange.call("GET", f"/api/members/{ada.id}", eve))["email"] == ada.email

    applicant, _ = await exchange.apply("Cleo")
    assert await exchange.refused("POST", f"/api/members/{applicant}/approval", eve) == 403
    assert await exchange.refused("GET", "/api/members", eve) == 403


async def test_repeated_failed_sign_ins_are_refused_for_a_while_even_with_the_right_password(
    exchange: Exchange,
) -> None:
    ada = await exchange.member("Ada")
    for _ in range(5):
        assert (await exchange.sign_in(ada.email, "guessing wrong")).status_code == 401

    blocked = await exchange.sign_in(ada.email)
    assert blocked.status_code == 429
    assert blocked.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(blocked.headers["retry-after"]) <= 900
    # Counted per email address: another member signs in from the same place as usual.
    ben = await exchange.member("Ben")
    assert (await exchange.sign_in(ben.email)).status_code == 201
    # And the upper case of the address is the same address.
    assert (await exchange.sign_in(ada.email.upper())).status_code == 429


async def test_a_successful_sign_in_clears_the_failed_ones(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    for _ in range(4):
        assert (await exchange.sign_in(ada.email, "guessing wrong")).status_code == 401
    assert (await exchange.sign_in(ada.email)).status_code == 201
    for _ in range(4):
        assert (await exchange.sign_in(ada.email, "guessing wrong")).status_code == 401
    assert (await exchange.sign_in(ada.email)).status_code == 201


async def test_acting_on_an_exchange_with_an_ended_or_unknown_session_is_refused_and_writes_nothing(
    exchange: Exchange,
) -> None:
    # Commands on exchanges look the caller's session up in the same round trip as the exchange itself.
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = await exchange.call("POST", "/api/listings", ada, json=OFFER)
    ex = (await exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"]}))["id"]
    other = await exchange.sign_in(ada.email)
    assert (await exchange.client.delete("/api/sessions/current", headers=ada.headers)).status_code == 204
    events = await exchange.event_count()

    made_up = {"Authorization": "Bearer tbk_made-up"}
    for headers in (ada.headers, made_up):
        for path in (f"/api/exchanges/{ex}/accept", "/api/exchanges/ex_0000000000000000/accept"):
            r = await exchange.client.post(path, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await exchange.client.post("/api/exchanges", json={"listing": listing["id"]}, headers=headers)
        assert r.status_code == 401, r.text
    assert await exchange.event_count() == events

    # Ada's other token still acts for her.
    token = {"Authorization": f"Bearer {other.json()['token']}"}
    accepted = await exchange.client.post(f"/api/exchanges/{ex}/accept", headers=token)
    assert (accepted.status_code, accepted.json()["status"]) == (200, "accepted")


async def test_acting_on_an_exchange_with_a_browser_session_needs_its_csrf_token(exchange: Exchange) -> None:
    ada = await exchange.member("Ada")
    ben = await exchange.member("Ben")
    listing = await exchange.call("POST", "/api/listings", ada, json=OFFER)
    ex = (await exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"]}))["id"]
    cookie, csrf, _ = await browser_session(exchange, ada.email)
    events = await exchange.event_count()

    for headers in (cookie, {**cookie, "X-CSRF-Token": csrf[:-1]}):
        r = await exchange.client.post(f"/api/exchanges/{ex}/accept", headers=headers)
        assert r.status_code == 403
        assert "CSRF" in r.json()["detail"]
    assert await exchange.event_count() == events

    r = await exchange.client.post(f"/api/exchanges/{ex}/accept", headers={**cookie, "X-CSRF-Token": csrf})
    assert (r.status_code, r.json()["status"]) == (200, "accepted")


async def test_a_browser_session_cookie_ends_with_its_session(exchange: Exchange) -> None:
    """The browser forgets the cookie when the server forgets the session (30 days by default), not years later."""
    ada = await exchange.member("Ada")
    r = await exchange.sign_in(ada.email, kind="cookie")
    assert r.status_code == 201, r.text
    exchange.client.cookies.clear()
    morsel = SimpleCookie(r.headers["set-cookie"])[SESSION_COOKIE]
    session_ends = datetime.fromisoformat(r.json()["expires"])
    now = datetime.now(UTC)
    assert morsel["max-age"], morsel.OutputString()
    assert abs(now + timedelta(seconds=int(morsel["max-age"])) - session_ends) < timedelta(minutes=1)
    if morsel["expires"]:
        assert abs(parsedate_to_datetime(morsel["expires"]) - session_ends) < timedelta(minutes=1), morsel["expires"]
    assert timedelta(days=29) < session_ends - now <= timedelta(days=30)
