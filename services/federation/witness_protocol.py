"""The C2SP tlog-witness ``add-checkpoint`` exchange, as bytes: the request body, and the answers.

Request: ``old <size>``, up to 63 base64 consistency-proof lines, an empty line, then the signed checkpoint note.
Answers: 200 with cosignature lines; 409 with the witness's size (``text/x.tlog.size``) when ``old`` is not what it
last cosigned, or the same size with another root; 400 malformed; 403 no trusted signature; 404 unknown log;
422 a consistency proof that does not verify. Over NATS, the status travels in the ``Timebank-Status`` header.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

CONTENT_TYPE = "text/plain"  # as a response, Litestar adds "; charset=utf-8" itself
SIZE_CONTENT_TYPE = "text/x.tlog.size"
STATUS_HEADER = "Timebank-Status"
MAX_PROOF = 63
_OLD = re.compile(r"^old (0|[1-9][0-9]{0,18})$")


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    old: int
    proof: tuple[bytes, ...]
    note: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A witness's answer: an HTTP status, its body and content type."""

    status: int
    body: bytes
    content_type: str = CONTENT_TYPE


class Refused(Exception):
    """The request is refused with ``answer``."""

    def __init__(self, status: int, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        if size is not None:
            self.answer = Answer(status, f"{size}\n".encode(), SIZE_CONTENT_TYPE)
        else:
            self.answer = Answer(status, (message + "\n").encode())


def checkpoint_text(note: bytes) -> str:
    """The checkpoint text of a signed note: everything up to and including the line before the blank line."""
    whole = note.decode("utf-8", "replace")
    cut = whole.find("\n\n")
    return whole[: cut + 1] if cut >= 0 else whole


def encode_request(old: int, proof: list[bytes], note: bytes) -> bytes:
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n").encode() + note


def parse_request(body: bytes) -> AddCheckpoint:
    """Read an add-checkpoint body; raises Refused (400) when it is not one."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise Refused(400, "the body has no empty line between the old size and proof and the checkpoint")
    lines = head.split(b"\n")
    try:
        match = _OLD.match(lines[0].decode("ascii"))
    except UnicodeDecodeError:
        match = None
    if match is None:
        raise Refused(400, "the first line must be 'old <size>'")
    if len(lines) - 1 > MAX_PROOF:
        raise Refused(400, f"more than {MAX_PROOF} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(400, "a consistency proof line is not base64") from None
        if len(digest) != 32:
            raise Refused(400, "a consistency proof line is not a SHA-256 hash")
        proof.append(digest)
    return AddCheckpoint(int(match.group(1)), tuple(proof), note)


def size_of_conflict(body: bytes) -> int | None:
    """The witness's size from a 409 answer's body, if it carries one."""
    text = body.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
