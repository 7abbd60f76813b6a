"""The web pages, in a real browser (chromium through Playwright), served over real HTTP with a real ledger."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.exchange.support import PASSWORD, Exchange, Member


@dataclass
class Site:
    """The served exchange, and a private browser window per person (each with its own cookies)."""

    exchange: Exchange
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    @property
    def base(self) -> str:
        return str(self.exchange.client.base_url).rstrip("/")

    async def visitor(self) -> Page:
        context = await self.browser.new_context(base_url=self.base)
        self.contexts.append(context)
        return await context.new_page()

    async def signed_in(self, email: str, password: str = PASSWORD) -> Page:
        page = await self.visitor()
        await sign_in(page, email, password)
        await expect(page).to_have_url(re.compile(r"/me$"))
        return page


@pytest.fixture
async def site(served_exchange: Exchange, browser: Browser) -> AsyncIterator[Site]:
    site = Site(served_exchange, browser)
    try:
        yield site
    finally:
        for context in site.contexts:
            await context.close()


async def sign_in(page: Page, email: str, password: str) -> None:
    await page.goto("/login")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def shows_hours(page: Page, hours: str, patience: float = 20.0) -> None:
    """Reload my page until the balance reads ``hours``: the ledger is told in the background."""
    deadline = asyncio.get_running_loop().time() + patience
    balance = page.locator("#balance")
    while True:
        await page.goto("/me")
        if await balance.count() and await balance.inner_text() == hours:
            return
        if asyncio.get_running_loop().time() > deadline:
            await expect(balance).to_have_text(hours)
        await asyncio.sleep(0.2)


def email_for(name: str) -> str:
    return f"{name.lower()}.{secrets.token_hex(3)}@example.org"


async def test_neighbours_join_trade_and_see_their_hours_move(site: Site) -> None:
    coordinator = await site.exchange.coordinator("Cora")
    ben = await site.exchange.member("Ben", area="Riverside")

    ada = await site.visitor()
    ada_email = email_for("Ada")
    await ada.goto("/join")
    await ada.get_by_label("Your name").fill("Ada")
    await ada.get_by_label("Email address").fill(ada_email)
    await ada.get_by_label(re.compile("^Password")).fill(PASSWORD)
    await ada.get_by_label("The same password again").fill(PASSWORD)
    await ada.get_by_label(re.compile("^Skills")).fill("bike repair, baking")
    await ada.get_by_label(re.compile("^Area")).fill("Riverside")
    await ada.get_by_role("button", name="Apply").click()
    await expect(ada.get_by_role("status")).to_contain_text("Thank you for applying")

    cora = await site.signed_in(coordinator.email)
    await cora.goto("/coordinate")
    application = cora.locator("#applications li", has_text="Ada")
    await expect(application).to_contain_text("bike repair, baking")
    await cora.get_by_role("button", name="Approve Ada").click()
    await expect(cora.get_by_role("status")).to_contain_text("The member is approved")
    await expect(cora.locator("#applications")).to_have_count(0)

    await sign_in(ada, ada_email, PASSWORD)
    await shows_hours(ada, "0:00")
    await ada.goto("/listings/new")
    await ada.get_by_label(re.compile("An offer")).check()
    await ada.get_by_label("Category").select_option(label="Home repair")
    await ada.get_by_label("Title").fill("Bike repair")
    await ada.get_by_label("Description").fill("Brakes, gears and punctures.\n\nBring the bike to my garage.")
    await ada.get_by_role("button", name="Publish").click()
    await expect(ada.get_by_role("heading", level=1)).to_have_text("Bike repair")
    await expect(ada.get_by_role("status")).to_contain_text("Your listing is published")

    ben_page = await site.signed_in(ben.email)
    await ben_page.goto("/")
    await ben_page.get_by_label("What are you looking for?").fill("brakes")
    await ben_page.get_by_role("button", name="Search").click()
    results = ben_page.locator("#results article")
    await expect(results).to_have_count(1)
    await expect(results).to_contain_text("by Ada")
    await results.get_by_role("link", name="Bike repair").click()
    await ben_page.get_by_label(re.compile("^Message")).fill("Saturday morning?")
    await ben_page.get_by_role("button", name="Propose an exchange").click()
    await expect(ben_page.locator("#status")).to_have_text("Proposed")

    await ada.goto("/me")
    proposal = ada.locator("#todo li", has_text="Bike repair")
    await expect(proposal).to_contain_text("Saturday morning?")
    await proposal.get_by_role("button", name="Accept").click()
    await expect(ada.get_by_role("status")).to_contain_text("You accepted the exchange")
    to_record = ada.locator("#todo li", has_text="Record your time")
    await to_record.get_by_label("Hours").fill("1")
    await to_record.get_by_label("Minutes").fill("30")
    await to_record.get_by_label(re.compile("^Note")).fill("new brake pads")
    await to_record.get_by_role("button", name="Record time").click()
    await expect(ada.get_by_role("status")).to_contain_text("The time is recorded")

    await ben_page.goto("/me")
    to_confirm = ben_page.locator("#todo li", has_text="Confirm the time")
    await expect(to_confirm).to_contain_text("Ada recorded 1:30 hours")
    await to_confirm.get_by_role("button", name="Confirm").click()
    await expect(ben_page.get_by_role("status")).to_contain_text("You confirmed the time")

    await shows_hours(ada, "1:30")
    await shows_hours(ben_page, "−1:30")
    row = ben_page.locator("#statement tbody tr").first
    await expect(row).to_contain_text("new brake pads")
    await expect(row).to_contain_text("Ada")
    await expect(row).to_contain_text("−1:30")


async def test_a_form_posted_without_its_csrf_token_is_refused(site: Site) -> None:
    ada: Member = await site.exchange.member("Ada")
    page = await site.signed_in(ada.email)
    await page.goto("/listings/new")
    await page.get_by_label("Category").select_option(label="Tutoring")
    await page.get_by_label("Title").fill("Maths homework help")
    await page.get_by_label("Description").fill("Up to GCSE.")
    await page.locator("main form input[name=csrf_token]").evaluate("field => field.remove()")

    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Publish").click()

    response = await navigation.value
    assert response is not None
    assert response.status == 403
    await expect(page.locator("#problem")).to_contain_text("CSRF token")
    await page.goto("/me")
    await expect(page.locator("#listings-heading + p")).to_contain_text("You have no listings")


async def test_a_wrong_password_is_refused_with_a_message_and_the_email_kept(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    page = await site.visitor()
    await page.goto("/login")
    await page.get_by_label("Email address").fill(ada.email)
    await page.get_by_label("Password").fill("not the password")

    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Sign in").click()

    response = await navigation.value
    assert response is not None
    assert response.status == 401
    await expect(page.get_by_role("alert")).to_contain_text("Wrong email address or password")
    await expect(page.get_by_label("Email address")).to_have_value(ada.email)
    await page.goto("/me")
    await expect(page).to_have_url(re.compile(r"/login\?next=%2Fme$"))


async def test_a_signed_out_visitor_is_sent_to_sign_in_and_then_to_the_page_they_asked_for(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    page = await site.visitor()

    await page.goto("/send")
    await expect(page).to_have_url(re.compile(r"/login\?next=%2Fsend$"))
    await page.get_by_label("Email address").fill(ada.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()

    await expect(page).to_have_url(re.compile(r"/send$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Send hours")


async def test_repeated_wrong_passwords_are_slowed_down_with_a_clear_message(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    page = await site.visitor()
    for _ in range(5):
        await sign_in(page, ada.email, "not the password")
        await expect(page.get_by_role("alert")).to_contain_text("Wrong email address or password")

    await page.goto("/login")
    await page.get_by_label("Email address").fill(ada.email)
    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Sign in").click()

    response = await navigation.value
    assert response is not None
    assert response.status == 429
    assert int(response.headers["retry-after"]) > 0
    await expect(page.get_by_role("alert")).to_contain_text(re.compile(r"Too many failed sign-ins.*Wait about \d+ min"))


async def test_a_sign_in_form_posted_from_elsewhere_is_refused(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    page = await site.visitor()

    # Never having seen the sign-in page, this browser holds no form token: as if another site posted the form.
    response = await page.request.post("/login", form={"email": ada.email, "password": PASSWORD})

    assert response.status == 403
    assert "timebank_session" not in [cookie["name"] for cookie in await page.context.cookies()]


async def test_a_refused_listing_comes_back_with_the_reason_and_what_was_typed(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    page = await site.signed_in(ada.email)
    await page.goto("/listings/new?kind=request")
    await page.get_by_label("Category").select_option(label="Transport")
    await page.get_by_label("Title").fill("   ")
    await page.get_by_label("Description").fill("A lift to the clinic on Tuesday.")

    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Publish").click()

    response = await navigation.value
    assert response is not None
    assert response.status == 422
    await expect(page.get_by_role("alert")).to_contain_text("Title cannot be empty")
    await expect(page.get_by_label("Description")).to_have_value("A lift to the clinic on Tuesday.")
    await expect(page.get_by_label("Category")).to_have_value("transport")
    await expect(page.get_by_label(re.compile("A request"))).to_be_checked()


async def test_an_invitation_link_lets_a_neighbour_join_at_once_and_only_once(site: Site) -> None:
    coordinator = await site.exchange.coordinator("Cora")
    cora = await site.signed_in(coordinator.email)
    await cora.goto("/coordinate")
    await cora.get_by_label("Role").select_option("member")
    await cora.get_by_role("button", name="Create an invitation link").click()
    link = await cora.locator("#invitation-link").inner_text()
    assert link.startswith(site.base + "/join/join_")

    dan = await site.visitor()
    await dan.goto(link)
    await expect(dan.get_by_role("heading", level=1)).to_have_text("You are invited to join")
    await dan.get_by_label("Your name").fill("Dan")
    await dan.get_by_label("Email address").fill(email_for("Dan"))
    await dan.get_by_label(re.compile("^Password")).fill(PASSWORD)
    await dan.get_by_label("The same password again").fill(PASSWORD)
    await dan.get_by_role("button", name="Join").click()

    await expect(dan).to_have_url(re.compile(r"/me\?done=joined$"))
    await expect(dan.get_by_role("status")).to_contain_text("Welcome! You are a member now.")
    await expect(dan.locator("#pending")).to_have_count(0)
    await shows_hours(dan, "0:00")
    other = await site.visitor()
    await other.goto(link)
    await expect(other.get_by_role("alert")).to_contain_text("This invitation has already been used")


async def test_search_shows_twenty_listings_at_a_time_and_filters_by_kind(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    first = await site.exchange.publish(ada, "Help number 0")
    for n in range(1, 21):
        await site.exchange.publish(ada, f"Help number {n}")
    await site.exchange.publish(ada, "A lift to the market", kind="request", category="transport")
    page = await site.visitor()

    await page.goto("/")
    await expect(page.locator("#results article")).to_have_count(20)
    await page.get_by_role("link", name="More listings").click()

    await expect(page.locator("#results article")).to_have_count(2)
    await expect(page.locator("#results")).to_contain_text(first["title"])
    await expect(page.get_by_role("link", name="More listings")).to_have_count(0)
    await page.goto("/")
    await page.get_by_label("Kind").select_option(label="Requests")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#results article")).to_have_count(1)
    await expect(page.locator("#results article")).to_contain_text("A lift to the market")
    await expect(page.locator("#results .badge-request")).to_have_text("Request")


async def test_a_paused_listing_disappears_from_search_until_it_is_resumed(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    await site.exchange.publish(ada, "Sourdough lessons", "Starter included.")
    page = await site.signed_in(ada.email)
    neighbour = await site.visitor()

    await page.get_by_role("button", name="Pause “Sourdough lessons”").click()
    await expect(page.get_by_role("status")).to_contain_text("Your listing is paused")
    await neighbour.goto("/?q=sourdough")
    await expect(neighbour.locator("#no-results")).to_be_visible()

    await page.get_by_role("button", name="Resume “Sourdough lessons”").click()
    await expect(page.get_by_role("status")).to_contain_text("Your listing is active again")
    await neighbour.goto("/?q=sourdough")
    await expect(neighbour.locator("#results article")).to_have_count(1)


async def test_a_disputed_time_is_resolved_by_a_coordinator_and_only_then_paid(site: Site) -> None:
    coordinator = await site.exchange.coordinator("Cora")
    ada, ben = await site.exchange.member("Ada"), await site.exchange.member("Ben")
    listing = await site.exchange.publish(ada, "Garden tidy-up", category="home_repair")
    ex = (await site.exchange.call("POST", "/api/exchanges", ben, json={"listing": listing["id"]}))["id"]
    await site.exchange.call("POST", f"/api/exchanges/{ex}/accept", ada)
    await site.exchange.call("POST", f"/api/exchanges/{ex}/record", ada, json={"minutes": 120})
    ben_page = await site.signed_in(ben.email)

    await ben_page.goto(f"/exchanges/{ex}")
    await ben_page.get_by_label(re.compile("Something wrong")).fill("It took 45 minutes, not two hours.")
    await ben_page.get_by_role("button", name="Dispute the time").click()
    await expect(ben_page.locator("#status")).to_have_text("Disputed")

    cora = await site.signed_in(coordinator.email)
    await cora.goto("/coordinate")
    dispute = cora.locator("#disputes li", has_text="Home repair")
    await expect(dispute).to_contain_text("2:00 hours from Ben to Ada disputed")
    await dispute.get_by_label("Hours").fill("0")
    await dispute.get_by_label("Minutes").fill("45")
    await dispute.get_by_role("button", name="Resolve").click()
    await expect(cora.get_by_role("status")).to_contain_text("The dispute is resolved")
    await expect(cora.locator("#disputes")).to_have_count(0)

    await shows_hours(ben_page, "−0:45")


async def test_a_donation_to_the_pot_can_be_granted_to_a_member_by_a_coordinator(site: Site) -> None:
    coordinator = await site.exchange.coordinator("Cora")
    ada, ben = await site.exchange.member("Ada"), await site.exchange.member("Ben")
    cora = await site.signed_in(coordinator.email)
    await cora.goto("/coordinate")
    # Every exchange in the test session shares the ledger, and so the pot (key exchange/pot): count from here.
    hours, minutes = (await cora.locator("#pot-balance").inner_text()).replace("\u2212", "-").split(":")
    before = int(hours) * 60 + (-1 if hours.startswith("-") else 1) * int(minutes)
    after = before + 30
    expected = f"{after // 60}:{after % 60:02d}"
    ben_page = await site.signed_in(ben.email)
    await ben_page.goto("/send")
    pot_form = ben_page.get_by_role("region", name="To the community pot")
    await pot_form.get_by_label("Minutes").fill("30")
    await pot_form.get_by_role("button", name="Donate hours").click()
    await expect(ben_page.get_by_role("status")).to_contain_text("Thank you for your donation")

    deadline = asyncio.get_running_loop().time() + 20
    while True:
        await cora.goto("/coordinate")
        if await cora.locator("#pot-balance").inner_text() == expected or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    await expect(cora.locator("#pot-balance")).to_have_text(expected)
    await cora.get_by_label("Member number").fill(ada.id)
    grant = cora.get_by_role("region", name="Community pot")
    await grant.get_by_label("Minutes").fill("30")
    await grant.get_by_label(re.compile("What for")).fill("winter coats")
    await grant.get_by_role("button", name="Grant from the pot").click()
    await expect(cora.get_by_role("status")).to_contain_text("The grant from the community pot is on its way")

    ada_page = await site.signed_in(ada.email)
    await shows_hours(ada_page, "0:30")
    await expect(ada_page.locator("#statement tbody tr").first).to_contain_text("the community pot")


async def test_a_member_who_erases_their_data_is_signed_out_for_good(site: Site) -> None:
    ada = await site.exchange.member("Ada")
    page = await site.signed_in(ada.email)

    await page.get_by_label("I understand that my personal data will be erased for good").check()
    await page.get_by_role("button", name="Erase my data").click()

    await expect(page.get_by_role("status")).to_contain_text("Your personal data is erased")
    await expect(page.get_by_role("navigation").get_by_role("link", name="Sign in")).to_be_visible()
    await sign_in(page, ada.email, PASSWORD)
    await expect(page.get_by_role("alert")).to_contain_text("Wrong email address or password")
