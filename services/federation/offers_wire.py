"""Shared offers on the wire: the signed value a network keeps per shared listing in its offers bucket, and the
rules a neighbour checks before it shows one.

A value is a signed note (``shared.note``) by the network's log key. Its text is a first line naming the format,
then the envelope as one line of JSON: ``timebank.offer.v1`` (an offer, as the member chose to share it) or
``timebank.offer.withdrawn.v1`` (a tombstone: paused, withdrawn, expired, no longer shared, or its member
erased). Only title, text, category, area and display name cross; nothing here can carry an email or contact.
Pure: msgspec and ``shared.note``; no NATS, no database, no web.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from shared.note import NoteError, Signer, Verifier, open_note, sign_note

# The note's first line: what follows is an offers-bucket envelope (so no checkpoint parser can take it for one).
HEADER = "timebank offers bucket"
# The listing ids a network may use as keys (ours: ``lst_`` and 16 hex digits).
LISTING_PATTERN = re.compile(r"lst_[A-Za-z0-9_-]{1,64}")
# What a neighbour may send at most, per field (characters) and per value (bytes).
LIMITS = {"title": 200, "text": 5000, "area": 100, "member_name": 200, "category": 64, "kind": 16}
MAX_VALUE_BYTES = 32 * 1024


class Envelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    # The network that shared it (its log origin) and the listing, which is the value's key in the bucket.
    origin: str
    listing: str
    # The sharing network's position in its own history when it wrote this value: a later value has a larger one.
    seq: int


class Offer(Envelope, frozen=True, kw_only=True, tag="timebank.offer.v1"):
    """A listing as its member chose to share it with neighbouring networks."""

    kind: str
    category: str
    title: str
    text: str
    area: str = ""
    # The member's display name, nothing else of theirs.
    member_name: str = ""
    expires: datetime


class OfferWithdrawn(Envelope, frozen=True, kw_only=True, tag="timebank.offer.withdrawn.v1"):
    """A tombstone: the listing is no longer shared (paused, withdrawn, expired, unshared, or its member erased)."""


AnyEnvelope = Offer | OfferWithdrawn

_encoder = msgspec.json.Encoder()
# Federated types never forbid unknown fields: a neighbour may be newer.
_decoder = msgspec.json.Decoder(AnyEnvelope)


class OfferRefused(Exception):
    """A neighbour's value that must not be shown; ``reason`` is what the refusal is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def seal(envelope: AnyEnvelope, signer: Signer) -> bytes:
    """The bucket value for ``envelope``: signed by our log key (whose name is our origin)."""
    if signer.name != envelope.origin:
        raise ValueError(f"an envelope of {envelope.origin} cannot be signed by {signer.name}'s key")
    return sign_note(f"{HEADER}\n{_encoder.encode(envelope).decode()}\n", signer)


def read(value: bytes, *, key: str, origin: str, log_key: Verifier) -> AnyEnvelope:
    """The envelope a neighbour ``origin`` stored under ``key``, once it is shown to be theirs and well formed.

    Raises ``OfferRefused`` with reason ``offer-size``, ``offer-signature``, ``offer-malformed``, ``offer-origin``
    or ``offer-key``."""
    if len(value) > MAX_VALUE_BYTES:
        raise OfferRefused("offer-size", f"{len(value)} bytes, over {MAX_VALUE_BYTES}")
    try:
        note = open_note(value, [log_key])
    except NoteError as exc:
        raise OfferRefused("offer-signature", f"not signed by {origin}'s log key: {exc}") from None
    header, _, rest = note.text.partition("\n")
    if header != HEADER:
        raise OfferRefused("offer-malformed", f"the note is not an offers-bucket value ({header[:60]!r})")
    try:
        envelope = _decoder.decode(rest.rstrip("\n"))
    except msgspec.DecodeError as exc:
        raise OfferRefused("offer-malformed", f"the envelope cannot be read: {exc}") from None
    if envelope.origin != origin:
        raise OfferRefused("offer-origin", f"the envelope claims the origin {envelope.origin!r}")
    if envelope.listing != key or not LISTING_PATTERN.fullmatch(key):
        raise OfferRefused("offer-key", f"the envelope for {envelope.listing!r} is stored under {key!r}")
    if isinstance(envelope, Offer):
        for field, limit in LIMITS.items():
            if len(getattr(envelope, field)) > limit:
                raise OfferRefused("offer-size", f"its {field} is over {limit} characters")
        if envelope.expires.tzinfo is None:
            raise OfferRefused("offer-malformed", "its expiry has no time zone")
    return envelope


def peek(value: bytes) -> AnyEnvelope | None:
    """The envelope in one of our own values, unverified (to resume publishing from what our bucket holds)."""
    _, _, rest = value.partition(b"\n")
    try:
        return _decoder.decode(rest.partition(b"\n")[0])
    except msgspec.DecodeError:
        return None
