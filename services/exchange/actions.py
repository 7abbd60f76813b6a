"""What a member may do next to an exchange, read off its read model: the web page offers only these buttons.

A pure decision over the view; the domain decides again when the member acts, so this only spares them buttons
that would be refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.exchange.domain.members import Actor

if TYPE_CHECKING:  # only the view's shape: nothing here reads the database
    from services.exchange.store import ExchangeView


def allowed_actions(ex: ExchangeView, actor: Actor) -> set[str]:
    """What ``actor`` may do to the exchange now (the domain decides again when they do it)."""
    mine = next((p for p in ex.parties if p.member == actor.member), None)
    live = [line for line in ex.lines if line.state != "declined"]
    can: set[str] = set()
    if mine is not None:
        if ex.status == "proposed" and mine.answer is None:
            can |= {"accept", "decline"}
        elif ex.status in ("proposed", "accepted") and all(line.state == "open" for line in live):
            can.add("cancel")
        provided = [line for line in live if line.provider == actor.member]
        if (
            provided
            and ex.status not in ("proposed", "declined", "cancelled")
            and all(line.state in ("open", "recorded") for line in provided)
        ):
            can.add("record")
        if any(line.receiver == actor.member and line.state == "recorded" for line in live):
            can |= {"confirm", "dispute"}
    if actor.coordinator and any(line.state in ("disputed", "refused") for line in live):
        can.add("resolve")
    return can
