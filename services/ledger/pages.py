"""The public audit page: the latest signed checkpoint, who signed it, and an inclusion check run in the browser.

The server only shows what it serves anyway; the checking (leaf hash, proof, signature) is done by the
visitor's browser in ``static/audit.js``, so the page never asks the node whether the node is honest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.response import Redirect, Template

from services.ledger import store
from shared import note

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Only the page's own script and style, and requests to its own node: nothing else may load or run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SignerRole = Literal["network", "witness", "other"]


class SignatureLine(msgspec.Struct, frozen=True, kw_only=True):
    """One signature line of the served checkpoint, as a visitor reads it."""

    name: str
    key_id: str  # 8 hex digits, as in a vkey
    role: SignerRole
    # A witness cosignature carries the time the witness signed (UTC).
    cosigned_at: str | None = None


class CheckpointView(msgspec.Struct, frozen=True, kw_only=True):
    """The latest checkpoint, parsed for display; ``note`` is the exact served text the browser verifies."""

    note: str
    origin: str
    size: int
    root: str  # base64, exactly as written in the checkpoint
    signatures: tuple[SignatureLine, ...]


def read_checkpoint(data: bytes, network: note.Verifier) -> CheckpointView:
    """Parse a signed checkpoint note with any cosignatures appended. Nothing is verified here.

    Lines under the network's key name and id are the network's own; 72-byte signatures (timestamp and
    Ed25519 signature) are witness cosignatures; anything else is another signer. Raises NoteError if
    the note is malformed.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise note.NoteError("checkpoint is not valid UTF-8") from exc
    cut = text.rfind("\n\n")
    if cut < 0:
        raise note.NoteError("checkpoint has no signature lines")
    body, block = text[: cut + 1], text[cut + 2 :]
    checkpoint = note.parse_checkpoint(body)
    lines = []
    for line in block.removesuffix("\n").split("\n"):
        sig = note.parse_signature_line(line)
        cosigned_at = None
        if (sig.name, sig.key_id) == (network.name, network.key_id):
            role: SignerRole = "network"
        elif len(sig.signature) == 72:
            role = "witness"
            when = datetime.fromtimestamp(note.cosignature_timestamp(sig), UTC)
            cosigned_at = when.isoformat().replace("+00:00", "Z")
        else:
            role = "other"
        lines.append(SignatureLine(name=sig.name, key_id=f"{sig.key_id:08x}", role=role, cosigned_at=cosigned_at))
    return CheckpointView(
        note=text,
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=body.split("\n")[2],
        signatures=tuple(lines),
    )


@get("/audit", operation_id="auditPage", include_in_schema=False, media_type=MediaType.HTML)
async def audit_page(request: Request[object, object, State], state: State) -> Template | Redirect:
    """The audit page (no sign-in): checkpoint, signers, verifier key, and the in-browser inclusion check."""
    if request.scope.get("raw_path", b"").partition(b"?")[0].endswith(b"/"):
        # Litestar also routes "audit/" here, but the page's relative URLs must resolve beside "audit".
        query = request.scope.get("query_string", b"").decode("latin-1")
        return Redirect(path="../audit" + (f"?{query}" if query else ""), status_code=308)
    async with state.pool.acquire() as conn:
        latest = await store.latest_checkpoint(conn)
    verifier: note.Verifier = state.verifier
    checkpoint = read_checkpoint(latest[1], verifier) if latest is not None else None
    return Template(
        template_name="audit.html",
        context={"checkpoint": checkpoint, "vkey": verifier.to_text(), "origin": verifier.name},
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"},
    )
