"""A neighbour network as the federation knows it: its origin, the keys that prove it, and how to reach it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.federation import names
from shared.errors import Invalid
from shared.note import CosignatureVerifier, NoteError, Verifier
from shared.settings import PeerSettings


@dataclass(frozen=True, slots=True)
class Peer:
    origin: str
    name: str
    log_key: Verifier
    witness_key: CosignatureVerifier | None
    nats_url: str
    nats_user: str | None
    nats_password: str | None
    # The password we issued it for our NATS server.
    issued_password: str | None
    trust_limit: int


def peer_from_settings(settings: PeerSettings) -> Peer:
    """The peer a settings entry describes; raises Invalid when a key or name cannot be read."""
    name = settings.name or names.network_name(settings.origin)
    if not re.fullmatch(names.NAME_PATTERN, name):
        raise Invalid(f"peer {settings.origin}: {name!r} cannot be a NATS name (letters, digits, - and _)")
    try:
        log_key = Verifier.from_text(settings.log_key)
        witness_key = CosignatureVerifier.from_text(settings.witness_key) if settings.witness_key else None
    except NoteError as exc:
        raise Invalid(f"peer {settings.origin}: {exc}") from None
    if log_key.name != settings.origin:
        raise Invalid(f"peer {settings.origin}: its log key is named {log_key.name!r}, not after its origin")
    if settings.trust_limit < 0:
        raise Invalid(f"peer {settings.origin}: the trust limit is a number of minutes >= 0")
    return Peer(
        origin=settings.origin,
        name=name,
        log_key=log_key,
        witness_key=witness_key,
        nats_url=settings.nats_url,
        nats_user=settings.nats_user,
        nats_password=settings.nats_password,
        issued_password=settings.issued_password,
        trust_limit=settings.trust_limit,
    )
