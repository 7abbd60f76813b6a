"""The audit page: a visitor's browser checks an entry's inclusion itself, and notices when the node lies."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.testing import AsyncTestClient
from playwright.async_api import Browser, Page, Route, expect

from services.ledger import pages
from services.ledger.app import create_app
from services.node.compose import Node
from services.node.postgres import PostgresServer
from shared.note import (
    CosignatureSigner,
    Signer,
    add_cosignatures,
    cosign,
    parse_signature_line,
    sign_note,
    write_signer_key,
)
from tests.ledger.conftest import ORIGIN, Ledger, auth, ledger_settings
from tests.ledger.processes import serve


@dataclass
class RunningNode:
    """A running `timebank serve` with a few accounts and transfers in its log."""

    base: str
    signer: Signer
    transfer_index: int  # 90 minutes from payer to payee
    payer: str
    payee: str
    checkpoint: str  # the served checkpoint note

    @property
    def size(self) -> int:
        return int(self.checkpoint.split("\n")[1])


@pytest.fixture(scope="module")
def node(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    postgres_server.create_database("audit_page")
    workdir = tmp_path_factory.mktemp("audit-page")
    signer = Signer.generate(ORIGIN)
    write_signer_key(workdir / "network.key", signer)
    with serve(workdir, postgres_server.dsn("audit_page"), workdir / "network.key") as base:
        with httpx.Client(base_url=base, headers=auth("coordinator"), timeout=30) as http:
            a, b, c = (http.post("/accounts", json={"key": k}).json()["id"] for k in ("a", "b", "c"))
            paid = http.post("/transfers", json={"key": "t1", "payer": a, "payee": b, "minutes": 90}).json()
            second = http.post("/transfers", json={"key": "t2", "payer": b, "payee": c, "minutes": 30}).json()
            assert http.post(f"/transfers/{second['id']}/reversal", json={"key": "r2"}).status_code == 201
            checkpoint = http.get("/log/checkpoint").text
        yield RunningNode(base, signer, paid["index"], a, b, checkpoint)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert not errors, errors


async def check_entry(page: Page, index: int) -> None:
    await page.get_by_label(re.compile("Entry number")).fill(str(index))
    await page.get_by_role("button", name="Check inclusion").click()


async def test_page_shows_the_latest_checkpoint_its_signer_and_the_network_key(node: RunningNode, page: Page) -> None:
    root = node.checkpoint.split("\n")[2]

    response = await page.goto(node.base + "/audit")

    assert response is not None
    assert response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Audit the ledger of {ORIGIN}")
    await expect(page.locator("#checkpoint-origin")).to_have_text(ORIGIN)
    await expect(page.locator("#checkpoint-size")).to_have_text(str(node.size))
    await expect(page.locator("#checkpoint-root")).to_have_text(root)
    signer_row = page.locator("#signers tbody tr")
    await expect(signer_row).to_have_count(1)
    await expect(signer_row).to_contain_text(ORIGIN)
    await expect(signer_row).to_contain_text(f"{node.signer.key_id:08x}")
    await expect(signer_row).to_contain_text("this network's own signature")
    await expect(page.locator("#vkey")).to_have_text(node.signer.verifier().to_text())


async def test_browser_verifies_a_transfer_and_the_checkpoint_signature(node: RunningNode, page: Page) -> None:
    await page.goto(node.base + "/audit")

    await check_entry(page, node.transfer_index)

    await expect(page.locator("#verdict")).to_have_text("Verified")
    checks = page.locator(".checks li")
    await expect(checks.filter(has_text="Ed25519 signature")).to_contain_text("is valid")
    await expect(checks.filter(has_text="proof hashes fold")).to_contain_text("checkpoint's root")
    await expect(page.locator("#entry-summary")).to_have_text(
        f"Transfer of 90 minutes (1 h 30 min) from {node.payer} to {node.payee}"
    )
    shown = json.loads(await page.locator("#entry-json").inner_text())
    assert (shown["type"], shown["minutes"]) == ("ledger.transfer.v1", 90)
    assert page.url.endswith(f"/audit?index={node.transfer_index}")  # a link to this check


async def test_proof_bundle_link_downloads_the_entrys_tlog_proof(node: RunningNode, page: Page, tmp_path: Path) -> None:
    await page.goto(f"{node.base}/audit?index={node.transfer_index}")  # the link checks straight away
    await expect(page.locator("#verdict")).to_have_text("Verified")

    async with page.expect_download() as pending:
        await page.get_by_role("link", name="Download the proof bundle").click()
    download = await pending.value

    assert download.suggested_filename == f"entry-{node.transfer_index}.tlog-proof"
    await download.save_as(tmp_path / "proof")
    bundle = (tmp_path / "proof").read_text()
    assert bundle.startswith("c2sp.org/tlog-proof@v1\n")
    assert f"\nindex {node.transfer_index}\n" in bundle


async def test_altered_proof_hash_makes_the_browser_report_failure(node: RunningNode, page: Page) -> None:
    async def alter_proof(route: Route) -> None:
        response = await route.fetch()
        body = await response.json()
        first = bytearray(base64.b64decode(body["proof"][0]))
        first[0] ^= 0x01
        body["proof"][0] = base64.b64encode(first).decode()
        await route.fulfill(response=response, json=body)

    await page.route("**/log/proof/inclusion?*", alter_proof)
    await page.goto(node.base + "/audit")

    await check_entry(page, node.transfer_index)

    await expect(page.locator("#verdict")).to_have_text("Verification failed")
    await expect(page.locator(".checks li.fail")).to_contain_text("not the checkpoint's root")
    await expect(page.get_by_role("status")).to_contain_text("could not be shown to be in this log")


async def test_altered_entry_bytes_make_the_browser_report_failure(node: RunningNode, page: Page) -> None:
    async def alter_entry(route: Route) -> None:
        response = await route.fetch()
        body = await response.json()
        data = base64.b64decode(body["entries"][0]["data"])
        body["entries"][0]["data"] = base64.b64encode(data.replace(b'"minutes":90', b'"minutes":9')).decode()
        await route.fulfill(response=response, json=body)

    await page.route("**/log/entries?*", alter_entry)
    await page.goto(node.base + "/audit")

    await check_entry(page, node.transfer_index)

    await expect(page.locator("#verdict")).to_have_text("Verification failed")
    await expect(page.get_by_role("heading", name="The entry as the node served it (not verified)")).to_be_visible()
    await expect(page.locator("#entry-summary")).to_contain_text("Transfer of 9 minutes")
    await expect(page.locator(".checks li.fail")).to_contain_text("not the checkpoint's root")


async def test_checkpoint_signed_by_an_impostor_key_fails_the_signature_check(node: RunningNode, page: Page) -> None:
    """An impostor signs the real checkpoint under the network's name and key id: only the key can tell."""
    impostor = Signer.generate(ORIGIN)
    served = node.checkpoint
    body = served[: served.rfind("\n\n") + 1]
    genuine = served[served.rfind("\n\n") + 2 :].rstrip("\n")
    forged = parse_signature_line(sign_note(body, impostor).decode().split("\n\n")[-1])
    forged_line = f"— {ORIGIN} " + base64.b64encode(node.signer.key_id.to_bytes(4, "big") + forged.signature).decode()

    async def forge(route: Route) -> None:
        response = await route.fetch()
        html = await response.text()
        assert genuine in html
        await route.fulfill(response=response, body=html.replace(genuine, forged_line))

    await page.route("**/audit", forge)
    await page.goto(node.base + "/audit")

    await check_entry(page, node.transfer_index)

    await expect(page.locator("#verdict")).to_have_text("Verification failed")
    await expect(page.locator(".checks li.fail")).to_contain_text("signature")
    await expect(page.locator(".checks li.fail")).to_contain_text("is NOT valid")


async def test_browser_without_ed25519_says_the_signature_was_not_checked(node: RunningNode, page: Page) -> None:
    # What an older browser does: WebCrypto without Ed25519 refuses to import the key.
    await page.add_init_script("""
        const importKey = crypto.subtle.importKey.bind(crypto.subtle);
        crypto.subtle.importKey = (format, data, algorithm, ...rest) =>
            (algorithm && algorithm.name === "Ed25519")
                ? Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"))
                : importKey(format, data, algorithm, ...rest);
    """)
    await page.goto(node.base + "/audit")

    await check_entry(page, node.transfer_index)

    await expect(page.locator("#verdict")).to_have_text("Included, signature not checked")
    await expect(page.locator(".checks li.unchecked")).to_contain_text("signature not checked in this browser")


async def test_page_works_when_the_ledger_is_mounted_under_a_prefix(node: RunningNode, page: Page) -> None:
    """Behind a proxy serving the ledger at /ledger/, every request the page makes stays under /ledger/."""
    requested: list[str] = []

    async def proxy(route: Route) -> None:
        requested.append(route.request.url)
        upstream = route.request.url.replace(node.base + "/ledger/", node.base + "/", 1)
        await route.fulfill(response=await route.fetch(url=upstream))

    await page.route(re.compile(r"^http://127\.0\.0\.1:\d+/"), proxy)
    await page.goto(node.base + "/ledger/audit")

    await check_entry(page, node.transfer_index)

    await expect(page.locator("#verdict")).to_have_text("Verified")
    assert all(url.startswith(node.base + "/ledger/") for url in requested), requested
    assert any("/ledger/log/proof/inclusion?" in url for url in requested), requested
    assert any("/ledger/static/audit.js" in url for url in requested), requested


def test_served_checkpoint_lists_the_network_signature_and_each_witness_cosignature() -> None:
    network = Signer.generate(ORIGIN)
    witness = CosignatureSigner.generate("witness.example/hillside")
    body = "timebank.test/riverside\n7\n" + base64.b64encode(bytes(range(32))).decode() + "\n"
    served = add_cosignatures(sign_note(body, network), [cosign(body, witness, 1_750_000_000)])

    view = pages.read_checkpoint(served, network.verifier())

    assert (view.origin, view.size, view.root) == (ORIGIN, 7, base64.b64encode(bytes(range(32))).decode())
    assert view.note == served.decode()
    assert [(s.name, s.key_id, s.role, s.cosigned_at) for s in view.signatures] == [
        (ORIGIN, f"{network.key_id:08x}", "network", None),
        ("witness.example/hillside", f"{witness.key_id:08x}", "witness", "2025-06-15T15:06:40Z"),
    ]


async def test_page_shows_each_cosigner_by_key_name_and_id(page: Page) -> None:
    network = Signer.generate(ORIGIN)
    witness = CosignatureSigner.generate("witness.example/hillside")
    body = "timebank.test/riverside\n7\n" + base64.b64encode(bytes(32)).decode() + "\n"
    served = add_cosignatures(sign_note(body, network), [cosign(body, witness, 1_750_000_000)])
    context = {
        "checkpoint": pages.read_checkpoint(served, network.verifier()),
        "vkey": network.verifier().to_text(),
        "origin": ORIGIN,
    }
    html = JinjaTemplateEngine(directory=pages.TEMPLATES).get_template("audit.html").render(**context)

    await page.set_content(html)

    rows = page.locator("#signers tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text(f"{ORIGIN} {network.key_id:08x} this network's own signature")
    await expect(rows.nth(1)).to_contain_text(
        f"witness.example/hillside {witness.key_id:08x} witness cosignature, made 2025-06-15T15:06:40Z"
    )


async def test_audit_page_of_an_empty_log_says_there_is_no_checkpoint_yet(ledger: Ledger) -> None:
    response = await ledger.client.get("/audit")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "The log has no checkpoint yet" in response.text
    assert 'id="check-form"' not in response.text


async def test_audit_with_a_trailing_slash_redirects_to_the_page(ledger: Ledger) -> None:
    response = await ledger.client.get("/audit/", follow_redirects=False)
    with_query = await ledger.client.get("/audit/?index=3", follow_redirects=False)

    assert response.status_code == 308
    assert response.headers["location"] == "../audit"  # relative: right under a mount prefix too
    assert with_query.headers["location"] == "../audit?index=3"


async def test_page_and_its_script_are_served_under_the_node_s_ledger_mount(database_url: str, signer: Signer) -> None:
    """`timebank serve` mounts the ledger at /ledger; the page, its assets and its redirect live under it."""
    ledger_app = create_app(ledger_settings(), database_url=database_url, signer=signer)
    mounts = Node({"/ledger": ledger_app, "": Litestar()})
    async with AsyncTestClient(app=mounts) as client:  # type: ignore[type-var]
        await client.post("/ledger/accounts", json={"key": "a"}, headers=auth("coordinator"))

        page = await client.get("/ledger/audit")
        script = await client.get("/ledger/static/audit.js")
        slash = await client.get("/ledger/audit/", follow_redirects=False)

    assert page.status_code == 200
    assert '<script src="static/audit.js" defer></script>' in page.text
    assert script.status_code == 200
    assert "rootFromInclusionProof" in script.text
    assert (slash.status_code, slash.headers["location"]) == (308, "../audit")
