"""The shared-offer envelope's rules, without servers: what a neighbour shows, and what it refuses and why."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.federation.offers_wire import LIMITS, Offer, OfferRefused, OfferWithdrawn, read, seal
from shared.note import Signer, sign_note

ORIGIN = "timebank.test/riverside"
KEY = Signer.generate(ORIGIN)


def offer(**changes: object) -> Offer:
    fields: dict[str, object] = {
        "origin": ORIGIN,
        "listing": "lst_0123456789abcdef",
        "seq": 7,
        "kind": "offer",
        "category": "home_repair",
        "title": "Bicycle repair",
        "text": "Punctures, brakes, gears.",
        "area": "Old Town",
        "member_name": "Ann",
        "expires": datetime.now(UTC) + timedelta(days=30),
    }
    fields.update(changes)
    return Offer(**fields)  # type: ignore[arg-type]


def refusal(value: bytes, key: str = "lst_0123456789abcdef") -> str:
    with pytest.raises(OfferRefused) as caught:
        read(value, key=key, origin=ORIGIN, log_key=KEY.verifier())
    return caught.value.reason


def test_a_sealed_offer_and_tombstone_read_back_as_they_were_sent() -> None:
    sent = offer()
    assert read(seal(sent, KEY), key=sent.listing, origin=ORIGIN, log_key=KEY.verifier()) == sent
    gone = OfferWithdrawn(origin=ORIGIN, listing=sent.listing, seq=8)
    assert read(seal(gone, KEY), key=sent.listing, origin=ORIGIN, log_key=KEY.verifier()) == gone


def test_a_value_signed_by_another_key_is_refused_as_signature() -> None:
    assert refusal(seal(offer(), Signer.generate(ORIGIN))) == "offer-signature"


def test_a_value_under_another_listings_key_is_refused_as_key() -> None:
    assert refusal(seal(offer(), KEY), key="lst_other") == "offer-key"


def test_a_value_claiming_another_origin_is_refused_as_origin() -> None:
    # Signed by riverside's key, but the envelope names another network.
    forged = offer(origin="timebank.test/hillside")
    text = seal(forged, Signer.generate("timebank.test/hillside")).split(b"\n\n")[0].decode() + "\n"
    assert refusal(sign_note(text, KEY)) == "offer-origin"


def test_a_signed_note_that_is_not_an_offer_is_refused_as_malformed() -> None:
    assert refusal(sign_note("timebank.test/riverside\n3\nAAAA\n", KEY)) == "offer-malformed"
    assert refusal(sign_note("timebank offers bucket\n{not json\n", KEY)) == "offer-malformed"


def test_oversized_fields_are_refused_as_size() -> None:
    assert refusal(seal(offer(title="x" * (LIMITS["title"] + 1)), KEY)) == "offer-size"


def test_a_newer_neighbours_unknown_fields_are_accepted() -> None:
    text = seal(offer(), KEY).split(b"\n\n")[0].decode().replace('"seq":7', '"seq":7,"photo":"later"') + "\n"
    assert read(sign_note(text, KEY), key="lst_0123456789abcdef", origin=ORIGIN, log_key=KEY.verifier()).seq == 7


def test_nothing_but_what_the_member_chose_to_share_can_cross() -> None:
    assert set(Offer.__struct_fields__) == {
        "origin", "listing", "seq", "kind", "category", "title", "text", "area", "member_name", "expires",
    }  # fmt: skip


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found - {"__future__"}


def test_the_envelope_and_the_exchanges_seam_import_neither_web_nor_database_drivers() -> None:
    root = Path(__file__).resolve().parents[2]
    assert _imports(root / "services/federation/offers_wire.py") == {"re", "datetime", "msgspec", "shared.note"}
    # The seam the federation calls: the exchange's SQL behind it, and nothing of its web layer or domain.
    seam = _imports(root / "services/exchange/neighbour_offers.py")
    assert seam == {"datetime", "pathlib", "msgspec", "services.exchange.events", "shared.db"}
